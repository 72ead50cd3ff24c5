"""diffusers Stable Diffusion 3 / 3.5 (``SD3Transformer2DModel``) as a tbcm velocity network.

Units.  ``StableDiffusion3Pipeline`` with ``FlowMatchEulerDiscreteScheduler`` denoises
``x_sigma = (1 - sigma) x0 + sigma n`` by Euler steps ``x <- x + (sigma_next - sigma) v``: the
transformer predicts the flow velocity ``v = n - x0`` of :mod:`tbcm.trigflow` and is fed the
scheduler's ``timestep = sigma * 1000`` (``num_train_timesteps``). :class:`SD3VelocityNet` takes
that timestep as is: SD3 bundles record ``timestep_scale = 1000`` and the adapter feeds
``1000 tau``. The time embedding's sinusoid is computed from the fp32 timestep, whatever the
transformer's dtype. Latents ``[B, 16, H, W]`` go in and come out unpacked (the transformer
patchifies itself); ``H`` and ``W`` must be multiples of ``patch_size``.

Guidance.  The teacher is guided by CFG against the empty prompt
(:func:`tbcm.models.adapter.guided_F`), as the pipeline guides against ``negative_prompt=""``.
``SD3Transformer2DModel`` has no guidance input, so the student's ``time_text_embed`` becomes a
:class:`GuidedTimeTextEmbed`: the teacher's timestep and pooled-text embedders (same weights, same
keys) plus a guidance embedder on ``1000 w`` -- FLUX's ``CombinedTimestepGuidanceTextProjEmbeddings``
convention -- whose output layer starts at zero, so the untrained student equals the teacher.

Forward-mode AD.  SD3's attention processors call ``F.scaled_dot_product_attention``, whose fused
CPU / GPU kernels have no forward-mode derivative; the student's processors run it restricted to
the math backend (:class:`MathSDPAProcessor`), which ``torch.func.jvp`` differentiates. The
teacher keeps the fused kernels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
from torch import Tensor, nn

from ....errors import UserError
from ...condition import TextCondition
from ..common import TransformerNet

SD3_SIGMA_D = 0.5  # TrigFlow data scale: x0 = sigma_d * latent (the flow latents have about unit variance)
GUIDANCE_PREFIX = "time_text_embed.guidance_embedder."


@dataclass
class SD3NetConfig:
    """What an SD3 network wrapper records besides the transformer's own diffusers config."""

    in_channels: int  # latent channels C (16)
    image_size: int  # latent height = width (the transformer's sample_size)
    transformer: dict = field(default_factory=dict)  # the diffusers config (for the record)

    def to_dict(self) -> dict:
        return asdict(self)


class MathSDPAProcessor:
    """A diffusers attention processor run with SDPA restricted to its math path: the same maths,
    differentiable in forward mode on every device."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def use_math_sdpa(transformer: nn.Module) -> None:
    """Wrap every attention processor of ``transformer`` in :class:`MathSDPAProcessor` (once)."""
    transformer.set_attn_processor({name: p if isinstance(p, MathSDPAProcessor) else MathSDPAProcessor(p)
                                    for name, p in transformer.attn_processors.items()})


@lru_cache(maxsize=None)
def _guided_embed_class():  # one class, defined once diffusers is imported
    from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings, TimestepEmbedding

    class GuidedTimeTextEmbed(CombinedTimestepTextProjEmbeddings):
        """``temb = e_t(timestep) + e_g(1000 w) + e_text(pooled)``; ``w`` is set per call in :attr:`guidance`
        (``[B]``, or ``None``: no guidance term). ``e_g``'s output layer starts at zero."""

        def __init__(self, embedding_dim: int, pooled_projection_dim: int):
            super().__init__(embedding_dim=embedding_dim, pooled_projection_dim=pooled_projection_dim)
            self.guidance_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=embedding_dim)
            nn.init.zeros_(self.guidance_embedder.linear_2.weight)
            nn.init.zeros_(self.guidance_embedder.linear_2.bias)
            self.guidance: Tensor | None = None

        def forward(self, timestep: Tensor, pooled_projection: Tensor) -> Tensor:
            dtype = pooled_projection.dtype
            temb = self.timestep_embedder(self.time_proj(timestep).to(dtype))
            if self.guidance is not None:
                temb = temb + self.guidance_embedder(self.time_proj(self.guidance * 1000).to(dtype))
            return temb + self.text_embedder(pooled_projection)

    return GuidedTimeTextEmbed


def add_guidance_input(transformer: nn.Module) -> nn.Module:
    """Give ``transformer`` a guidance input: its ``time_text_embed`` becomes a ``GuidedTimeTextEmbed``
    holding the same timestep and text embedders and a zero-output guidance embedder."""
    old = transformer.time_text_embed
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    new = _guided_embed_class()(inner, transformer.config.pooled_projection_dim)
    new.timestep_embedder, new.text_embedder = old.timestep_embedder, old.text_embedder
    transformer.time_text_embed = new.to(device=old.text_embedder.linear_1.weight.device,
                                         dtype=old.text_embedder.linear_1.weight.dtype)
    return transformer


def has_guidance_input(transformer: nn.Module) -> bool:
    return hasattr(transformer.time_text_embed, "guidance_embedder")


def transformer_config(transformer: nn.Module) -> dict:
    """The diffusers config as plain JSON values (tuples -> lists), fit for ``model.yaml``."""
    return json.loads(json.dumps({k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}))


class SD3VelocityNet(TransformerNet):
    """``forward(x_flow [B,16,H,W], timestep [B] = 1000 tau, cond, guidance [B] | None) -> v [B,16,H,W]``.

    ``cond`` carries the joint CLIP + T5 sequence (``embeds [B, N + L, D]``) and the two CLIP
    pooled projections (``pooled [B, P]``); SD3 takes no text mask. ``guidance`` is the CFG scale
    ``w``, for a student (a transformer with a guidance input) only, and required there.
    """

    # LoRA students' default adapted layers: every attention projection (both streams, SD3.5's
    # second attention too) and both feed-forwards
    lora_targets = (r"attn2?\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)",
                    r"ff(_context)?\.net\.(0\.proj|2)")

    @property
    def config(self) -> SD3NetConfig:
        c = self.transformer.config
        return SD3NetConfig(c.in_channels, c.sample_size, transformer_config(self.transformer))

    @property
    def blocks(self) -> nn.ModuleList:
        """The joint transformer blocks: the units FSDP2 shards one by one."""
        return self.transformer.transformer_blocks

    def forward(self, x_flow: Tensor, timestep: Tensor, cond: TextCondition, guidance: Tensor | None = None) -> Tensor:
        if cond.pooled is None:
            raise ValueError("SD3 needs the pooled prompt projections: encode prompts with SD3PromptEncoder")
        guided = has_guidance_input(self.transformer)
        if guided != (guidance is not None):
            raise ValueError("pass the CFG scale `guidance` to a student network and to it only")
        dtype = self.transformer.dtype
        embed = self.transformer.time_text_embed
        if guided:
            embed.guidance = guidance.to(torch.float32)
        try:
            out = self.transformer(hidden_states=x_flow.to(dtype), encoder_hidden_states=cond.embeds.to(dtype),
                                   pooled_projections=cond.pooled.to(dtype), timestep=timestep.to(torch.float32),
                                   return_dict=False)[0]
        finally:
            if guided:
                embed.guidance = None
        return out.to(x_flow.dtype)

    def with_guidance_embed(self) -> "SD3VelocityNet":
        """The student network: see :func:`student_transformer`."""
        return SD3VelocityNet(student_transformer(self.transformer))


def student_transformer(teacher: nn.Module) -> nn.Module:
    """An fp32 ``SD3Transformer2DModel`` with the teacher's weights, a zero-initialised guidance
    input (:func:`add_guidance_input`) and math-path attention."""
    from diffusers import SD3Transformer2DModel

    if has_guidance_input(teacher):
        raise UserError("this SD3 transformer already has a guidance input (a tbcm student?): pass the teacher "
                        "pipeline it was distilled from")
    student = add_guidance_input(SD3Transformer2DModel(**{k: v for k, v in dict(teacher.config).items()
                                                          if not k.startswith("_")}))
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    fresh = [k for k in missing if not k.startswith(GUIDANCE_PREFIX)]
    if fresh or unexpected:
        raise UserError(f"cannot build an SD3 student from this teacher (missing {fresh[:3]}, unexpected "
                        f"{unexpected[:3]}): the teacher must be a plain SD3Transformer2DModel")
    use_math_sdpa(student)
    return student
