"""diffusers Sana as a tbcm velocity network: teacher wrapper, student construction, folders.

Time units.  :class:`~tbcm.models.adapter.TrigFlowAdapter` hands the network the flow time
``tau`` in ``[0, 1]`` (Sana bundles record ``timestep_scale = 1``); :class:`SanaVelocityNet`
multiplies it by its own ``time_multiplier`` before the transformer's sinusoidal embedding:

* a standard Sana teacher (``SanaPipeline``) sees ``1000 * tau * config.timestep_scale``;
* a Sana-Sprint-style teacher with a dense time embedding sees ``tau`` (``time_multiplier: 1``);
* the student always sees ``tau`` -- that is what ``SanaSprintPipeline`` feeds it -- so when the
  teacher used ``1000 tau`` the student's timestep MLP is refitted once (:func:`refit_time_embedding`)
  to reproduce the teacher's time conditioning from the dense input.

Guidance.  The student is a ``SanaTransformer2DModel`` with ``guidance_embeds=True``; tbcm passes
the CFG scale ``w`` and the wrapper multiplies it by ``guidance_embeds_scale`` (0.1), exactly as
``SanaSprintPipeline`` does.  The fresh guidance embedder's output layer starts at zero, so the
untrained student equals the teacher.

Forward-mode AD.  The student's cross-attention runs :class:`MathCrossAttnProcessor` (explicit
softmax) instead of fused SDPA kernels, which have no forward-mode derivative on GPU; the
self-attention is Sana's linear attention (plain matmuls) and needs no change.  The teacher keeps
its fast kernels: it never takes a JVP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ....errors import UserError
from ..common import TransformerNet
from ...condition import TextCondition

SANA_SIGMA_D = 0.5  # TrigFlow data scale of Sana-Sprint (SCMScheduler sigma_data)


@dataclass
class SanaNetConfig:
    """What a Sana network wrapper needs besides the transformer's own diffusers config."""

    in_channels: int
    image_size: int  # latent height = width
    time_multiplier: float  # network timestep = time_multiplier * tau
    transformer: dict = field(default_factory=dict)  # the diffusers config (for the record)

    def to_dict(self) -> dict:
        return asdict(self)


class MathCrossAttnProcessor:
    """Sana's cross-attention with an explicit softmax: same maths as ``SanaAttnProcessor2_0``
    (scale ``head_dim**-0.5``, additive mask bias), differentiable in forward mode everywhere."""

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None) -> Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (z.view(b, -1, attn.heads, head_dim).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) * head_dim ** -0.5  # [B, heads, N, L]
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, context.shape[1], b)
            scores = scores + mask.view(b, attn.heads, -1, mask.shape[-1]).to(scores.dtype)
        out = F.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def use_math_cross_attention(transformer: nn.Module) -> None:
    """Replace every fused (SDPA) attention processor by :class:`MathCrossAttnProcessor`."""
    processors = {name: (MathCrossAttnProcessor() if type(p).__name__ == "SanaAttnProcessor2_0" else p)
                  for name, p in transformer.attn_processors.items()}
    transformer.set_attn_processor(processors)


class SanaVelocityNet(TransformerNet):
    """``forward(x_flow [B,C,H,W], tau [B], cond, guidance [B] | None) -> v [B,C,H,W]`` (flow velocity).

    ``guidance`` is the CFG scale ``w`` (student only); the embedder sees ``w * guidance_embeds_scale``.
    """

    # LoRA students' default adapted layers: both attentions' q / k / v / out and the GLU-MBConv
    # MLP's 1x1 convolutions (its depthwise convolution stays the teacher's)
    lora_targets = ("to_q", "to_k", "to_v", r"to_out\.0", "conv_inverted", "conv_point")

    @staticmethod
    def teacher_key(name: str) -> str:
        """The teacher's name of a student parameter: the student's time embedding holds the
        teacher's timestep MLP one level up (:func:`student_transformer`)."""
        return name.replace("transformer.time_embed.timestep_embedder.",
                            "transformer.time_embed.emb.timestep_embedder.", 1)

    def __init__(self, transformer: nn.Module, time_multiplier: float):
        super().__init__(transformer)
        self.time_multiplier = float(time_multiplier)

    @property
    def config(self) -> SanaNetConfig:
        c = self.transformer.config
        return SanaNetConfig(c.in_channels, c.sample_size, self.time_multiplier, dict(c))

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks: the units FSDP2 shards one by one."""
        return self.transformer.transformer_blocks

    def forward(self, x_flow: Tensor, tau: Tensor, cond: TextCondition, guidance: Tensor | None = None) -> Tensor:
        dtype = self.transformer.dtype
        g = None
        if guidance is not None:
            g = (guidance.to(torch.float32) * self.transformer.config.guidance_embeds_scale).to(dtype)
        out = self.transformer(hidden_states=x_flow.to(dtype), encoder_hidden_states=cond.embeds.to(dtype),
                               encoder_attention_mask=cond.mask, timestep=tau * self.time_multiplier,
                               guidance=g, return_dict=False)[0]
        return out.to(x_flow.dtype)

    def with_guidance_embed(self, refit_steps: int = 300) -> "SanaVelocityNet":
        """The student network: see :func:`student_transformer`."""
        return SanaVelocityNet(student_transformer(self.transformer, self.time_multiplier, refit_steps), 1.0)


def student_transformer(teacher: nn.Module, teacher_time_multiplier: float, refit_steps: int = 300) -> nn.Module:
    """A ``SanaTransformer2DModel`` with ``guidance_embeds=True`` holding the teacher's weights.

    The teacher's ``time_embed.emb.timestep_embedder`` / ``time_embed.linear`` become the student's
    ``time_embed.timestep_embedder`` / ``time_embed.linear``; the guidance embedder is fresh with a
    zero output layer. Cross-attention uses the math path. The student takes the dense time input
    ``tau``; if the teacher took ``m * tau`` (m != 1) the timestep MLP is refitted.
    """
    from diffusers import SanaTransformer2DModel

    cfg = {k: v for k, v in dict(teacher.config).items() if not k.startswith("_")}
    cfg["guidance_embeds"] = True
    student = SanaTransformer2DModel(**cfg)  # fp32 master weights, whatever the teacher runs in
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith("time_embed.emb.timestep_embedder."):
            key = key.replace("time_embed.emb.", "time_embed.", 1)
        state[key] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    fresh = [k for k in missing if not k.startswith("time_embed.guidance_embedder.")]
    if fresh or unexpected:  # the teacher is not a plain Sana transformer
        raise UserError(f"cannot build a Sana student from this teacher (missing {fresh[:3]}, unexpected "
                        f"{unexpected[:3]}): the teacher must be a SanaTransformer2DModel without guidance_embeds")
    last = student.time_embed.guidance_embedder.linear_2
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    if teacher_time_multiplier != 1.0:
        refit_time_embedding(teacher, student, teacher_time_multiplier, refit_steps)
    use_math_cross_attention(student)
    return student


def _teacher_time_features(teacher: nn.Module, tau: Tensor, multiplier: float) -> Tensor:
    """``[N, D]`` on ``tau``'s device, whatever device the teacher is on."""
    emb = teacher.time_embed.emb
    t = tau.to(teacher.device) * multiplier
    return emb.timestep_embedder(emb.time_proj(t).to(teacher.dtype)).to(tau.device)


def _student_time_features(student: nn.Module, tau: Tensor) -> Tensor:
    te = student.time_embed
    return te.timestep_embedder(te.time_proj(tau.to(student.device)).to(student.dtype)).to(tau.device)


def time_embedding_error(teacher: nn.Module, student: nn.Module, multiplier: float, points: int = 1025) -> float:
    """Relative RMS error ``|e_s(tau) - e_t(m tau)| / |e_t(m tau)|`` over ``points`` flow times in [0, 1]."""
    tau = torch.linspace(0, 1, points, device="cpu")
    with torch.no_grad():
        target = _teacher_time_features(teacher, tau, multiplier).float()
        got = _student_time_features(student, tau).float()
    return float((got - target).pow(2).mean().sqrt() / target.pow(2).mean().sqrt().clamp_min(1e-12))


def refit_time_embedding(teacher: nn.Module, student: nn.Module, multiplier: float, steps: int = 300,
                         points: int = 2049, lr: float = 1e-3) -> tuple[float, float]:
    """Fit the student's timestep MLP so ``e_s(tau) ~= e_t(multiplier * tau)`` on a grid of ``tau``.

    The sinusoidal features of ``1000 tau`` and of ``tau`` differ, no weight mapping makes them
    equal, so this is a least-squares fit (Adam, full batch, fp32) of a 1-D curve: seconds even at
    Sana's width. Returns the relative error before and after; the better of the two is kept.
    """
    before = time_embedding_error(teacher, student, multiplier)
    mlp = student.time_embed.timestep_embedder
    initial = {k: v.clone() for k, v in mlp.state_dict().items()}
    dtype = next(mlp.parameters()).dtype
    device = student.device
    tau = torch.rand(points, generator=torch.Generator().manual_seed(0), device="cpu")
    tau = torch.cat([tau, torch.linspace(0, 1, 257, device="cpu")]).to(device)
    with torch.no_grad():
        target = _teacher_time_features(teacher, tau, multiplier).float()
        inputs = student.time_embed.time_proj(tau).float()
    mlp.float()
    opt = torch.optim.Adam(mlp.parameters(), lr=lr)
    scale = target.pow(2).mean()
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = (mlp(inputs) - target).pow(2).mean() / scale
            loss.backward()
            opt.step()
    mlp.to(dtype)
    after = time_embedding_error(teacher, student, multiplier)
    if after > before:
        mlp.load_state_dict(initial)
        after = before
    return before, after
