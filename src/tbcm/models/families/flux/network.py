"""diffusers FLUX (``FluxTransformer2DModel``) as a tbcm velocity network: wrapper and student.

Units.  ``FluxPipeline`` with ``FlowMatchEulerDiscreteScheduler`` denoises
``x_sigma = (1 - sigma) x0 + sigma n`` with Euler steps ``x <- x + (sigma_next - sigma) v``, so
the transformer predicts the flow velocity ``v = n - x0`` -- the convention of
:mod:`tbcm.trigflow`.  The pipeline feeds ``timestep = sigma`` in ``[0, 1]`` (scheduler time
``/ 1000``) and the transformer multiplies it by 1000 inside; :class:`FluxVelocityNet` therefore
takes the flow time ``tau`` as is (bundles record ``timestep_scale = 1``).

Layout.  The network sees latents ``[B, C, H, W]`` (``C`` = the VAE's latent channels = the
transformer's ``in_channels / 4``); the wrapper packs them into 2x2 patches and builds the
rotary position ids exactly as ``FluxPipeline._pack_latents`` / ``_prepare_latent_image_ids``
do, text ids all zero as ``FluxPipeline.encode_prompt`` makes them, and unpacks the output.

Guidance.  A teacher without a guidance embedding (FLUX.1-schnell-like) is guided by true CFG with
the empty prompt (:func:`tbcm.models.adapter.guided_F`).  The student is a
``FluxTransformer2DModel`` with ``guidance_embeds=True`` holding the teacher's weights and a fresh
guidance embedder whose output layer is zero, so the untrained student equals the teacher; it is
fed ``guidance = w`` as ``FluxPipeline`` feeds ``guidance_scale`` (the transformer scales it by
1000 like the timestep).

Forward-mode AD.  The default attention (``F.scaled_dot_product_attention``) has no forward-mode
derivative in its fused kernels (CPU flash attention included), so the student's attention
processors run diffusers' ``_native_math`` backend (SDPA restricted to its composite math path,
which ``torch.func.jvp`` differentiates). The teacher keeps the default kernels: it never takes a JVP.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ....errors import UserError
from ..common import TransformerNet
from ...condition import TextCondition

FLUX_SIGMA_D = 0.5  # TrigFlow data scale: a unit convention (x0 = sigma_d * latent), Sana-Sprint's value
MATH_BACKEND = "_native_math"


@dataclass
class FluxNetConfig:
    """What a FLUX network wrapper needs besides the transformer's own diffusers config."""

    in_channels: int  # latent channels C (the transformer packs 2x2 patches: in_channels = 4 C)
    image_size: int  # latent height = width
    transformer: dict = field(default_factory=dict)  # the diffusers config (for the record)

    def to_dict(self) -> dict:
        return asdict(self)


def pack_latents(x: Tensor) -> Tensor:
    """``[B, C, H, W] -> [B, (H/2)(W/2), 4C]``: ``FluxPipeline._pack_latents``."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`pack_latents`: ``[B, (H/2)(W/2), 4C] -> [B, C, H, W]``."""
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def latent_image_ids(h: int, w: int, device=None, dtype=torch.float32) -> Tensor:
    """``[(H/2)(W/2), 3]`` rotary ids ``(0, row, col)`` of the packed patches: ``_prepare_latent_image_ids``."""
    # built on the target device: no host-to-device copy in every forward
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


def transformer_config(transformer: nn.Module) -> dict:
    """The diffusers config as plain JSON values (tuples -> lists), fit for ``model.yaml``."""
    return json.loads(json.dumps({k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}))


def use_math_attention(transformer: nn.Module) -> None:
    """Route every attention of ``transformer`` through diffusers' forward-differentiable math backend.

    Sets each processor's own backend. Not ``transformer.set_attention_backend``: that also makes
    the backend diffusers' process-wide default, which would put the teacher on math attention too.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName

    backend = AttentionBackendName(MATH_BACKEND)
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            processor._attention_backend = backend


class FluxVelocityNet(TransformerNet):
    """``forward(x_flow [B,C,H,W], tau [B], cond, guidance [B] | None) -> v [B,C,H,W]`` (flow velocity).

    ``cond`` carries the T5 sequence (``embeds``) and the CLIP pooled projection (``pooled``);
    FLUX takes no text attention mask. ``guidance`` is the CFG scale ``w`` (student only).
    """

    # LoRA students' default adapted layers: every attention projection (image and text streams)
    # and both feed-forwards of the double blocks, the MLP and output projections of the single ones
    lora_targets = (r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)",
                    r"ff(_context)?\.net\.(0\.proj|2)", r"single_transformer_blocks\.\d+\.proj_(mlp|out)")

    def __init__(self, transformer: nn.Module, image_size: int):
        super().__init__(transformer)
        self.image_size = int(image_size)
        # diffusers casts the timestep to the latents' dtype (bf16: steps of 2^-8 in tau) before
        # the time embedding; this hook hands the embedding the fp32 timestep instead, so the
        # sinusoid (computed in fp32 by diffusers) sees the exact tau and its JVP tangent.
        self._timestep_fp32: Tensor | None = None
        transformer.time_text_embed.register_forward_pre_hook(self._exact_timestep)

    def _exact_timestep(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._timestep_fp32 is None:
            return None
        return (self._timestep_fp32, *args[1:])

    @property
    def config(self) -> FluxNetConfig:
        return FluxNetConfig(self.transformer.config.in_channels // 4, self.image_size,
                             transformer_config(self.transformer))

    @property
    def blocks(self) -> list[nn.Module]:
        """The double- and single-stream transformer blocks: the units FSDP2 shards one by one."""
        return [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    def forward(self, x_flow: Tensor, tau: Tensor, cond: TextCondition, guidance: Tensor | None = None) -> Tensor:
        if cond.pooled is None:
            raise ValueError("FLUX needs the pooled prompt projection: encode prompts with FluxPromptEncoder")
        dtype = self.transformer.dtype
        _, _, h, w = x_flow.shape
        g = None if guidance is None else guidance.to(torch.float32)  # as FluxPipeline feeds guidance_scale
        self._timestep_fp32 = tau.to(torch.float32) * 1000  # what diffusers computes, without the cast
        try:
            out = self.transformer(
                hidden_states=pack_latents(x_flow.to(dtype)), timestep=tau.to(dtype), guidance=g,
                pooled_projections=cond.pooled.to(dtype), encoder_hidden_states=cond.embeds.to(dtype),
                txt_ids=torch.zeros(cond.embeds.shape[1], 3, device=x_flow.device, dtype=dtype),
                img_ids=latent_image_ids(h, w, x_flow.device, dtype), return_dict=False)[0]
        finally:
            self._timestep_fp32 = None
        return unpack_latents(out, h, w).to(x_flow.dtype)

    def with_guidance_embed(self) -> "FluxVelocityNet":
        """The student network: see :func:`student_transformer`."""
        return FluxVelocityNet(student_transformer(self.transformer), self.image_size)


GUIDANCE_PREFIX = "time_text_embed.guidance_embedder."


def student_transformer(teacher: nn.Module) -> nn.Module:
    """A ``FluxTransformer2DModel`` with ``guidance_embeds=True`` holding the teacher's weights (fp32).

    The teacher's ``CombinedTimestepTextProjEmbeddings`` and the student's
    ``CombinedTimestepGuidanceTextProjEmbeddings`` name their shared parts alike
    (``time_text_embed.{timestep_embedder, text_embedder}``), so every teacher weight maps to the
    same key; only ``time_text_embed.guidance_embedder`` is new, its output layer zero. Attention
    uses the math backend.
    """
    from diffusers import FluxTransformer2DModel

    if teacher.config.guidance_embeds:
        raise UserError(guidance_distilled_message("this teacher"))
    cfg = {k: v for k, v in dict(teacher.config).items() if not k.startswith("_")}
    cfg["guidance_embeds"] = True
    student = FluxTransformer2DModel(**cfg)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    fresh = [k for k in missing if not k.startswith(GUIDANCE_PREFIX)]
    if fresh or unexpected:
        raise UserError(f"cannot build a FLUX student from this teacher (missing {fresh[:3]}, unexpected "
                        f"{unexpected[:3]}): the teacher must be a FluxTransformer2DModel without guidance_embeds")
    last = student.time_text_embed.guidance_embedder.linear_2
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    use_math_attention(student)
    return student


def guidance_distilled_message(what: str) -> str:
    return (f"{what} has a guidance embedding (guidance-distilled, like FLUX.1-dev): tbcm does not support such "
            "teachers yet, its true CFG needs a teacher without one (guidance_embeds=false, like FLUX.1-schnell)")
