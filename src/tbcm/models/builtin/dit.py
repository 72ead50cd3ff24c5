"""TinyDiT: the built-in text-conditioned flow-matching transformer (DiT-style, adaLN-Zero).

It predicts the flow-matching velocity ``v = n - x0_flow`` at flow state ``x_tau`` and is fed
the timestep ``1000 * tau`` like Sana.  With ``guidance_embed=True`` (students) it also takes
the CFG scale ``w`` through an embedder whose last layer starts at zero, so a student built from
a teacher's weights computes exactly the teacher's conditional velocity at initialisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import MathAttention, ScalarEmbedder
from ..condition import TextCondition


@dataclass
class DiTConfig:
    in_channels: int = 1
    image_size: int = 8
    patch_size: int = 2
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 64
    guidance_embed: bool = False
    guidance_embed_scale: float = 0.1  # Sana-Sprint: the embedder sees 0.1 * w (x 1000 like t)
    # cross-attention from the image tokens to the prompt's tokens in every block (else only the
    # pooled prompt vector enters, through adaLN: nearly a bag of words, see docs/results.md)
    text_cross_attention: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, cross_attention: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = MathAttention(hidden, heads)
        self.cross = None
        if cross_attention:  # its output starts at zero, like adaLN-Zero's gates
            self.norm_cross = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
            self.cross = MathAttention(hidden, heads)
            nn.init.zeros_(self.cross.out.weight)
            nn.init.zeros_(self.cross.out.bias)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        nn.init.zeros_(self.ada[-1].weight)
        nn.init.zeros_(self.ada[-1].bias)

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """``x`` ``[B, N, D]`` image tokens, ``c`` ``[B, D]`` conditioning vector, ``context``
        ``[B, L, D]`` prompt tokens with ``context_mask`` ``[B, L]`` (cross-attention blocks only)."""
        s1, g1, a1, s2, g2, a2 = self.ada(c).chunk(6, dim=-1)
        x = x + a1[:, None] * self.attn(_modulate(self.norm1(x), s1, g1))
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context, context_mask)
        return x + a2[:, None] * self.mlp(_modulate(self.norm2(x), s2, g2))


class TinyDiT(nn.Module):
    """Velocity network. ``forward(x [B,C,H,W], timestep [B] in 0..1000, cond, guidance [B]|None)``."""

    # LoRA students' default adapted layers: the blocks' attention (self and cross) and MLP
    lora_targets = (r"attn\.(q|kv|out)", r"cross\.(q|kv|out)", r"blocks\.\d+\.mlp\.[02]")

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c, p, h = config.in_channels, config.patch_size, config.hidden
        if config.image_size % p:
            raise ValueError(f"image_size {config.image_size} is not divisible by patch_size {p}")
        self.grid = config.image_size // p
        self.patch = nn.Linear(c * p * p, h)
        self.pos = nn.Parameter(torch.randn(self.grid * self.grid, h) * 0.02)
        self.time_embed = ScalarEmbedder(h)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.guidance_embed = ScalarEmbedder(h) if config.guidance_embed else None
        if self.guidance_embed is not None:
            nn.init.zeros_(self.guidance_embed.mlp[-1].weight)
            nn.init.zeros_(self.guidance_embed.mlp[-1].bias)
        self.text_tokens = nn.Linear(config.text_dim, h) if config.text_cross_attention else None
        self.blocks = nn.ModuleList(DiTBlock(h, config.heads, config.mlp_ratio, config.text_cross_attention)
                                    for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.final = nn.Linear(h, c * p * p)
        # Recompute block activations in backward instead of storing them (memory for time).
        # Only on the gradient path: under the JVP (no_grad) blocks run plainly.
        self.gradient_checkpointing = False
        for layer in (self.final_ada[-1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def with_guidance_embed(self) -> "TinyDiT":
        """A copy with a (zero-initialised) guidance embedder and this network's weights."""
        cfg = DiTConfig(**{**self.config.to_dict(), "guidance_embed": True})
        student = TinyDiT(cfg)
        missing, unexpected = student.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("guidance_embed.") for k in missing), (missing, unexpected)
        return student

    def _patchify(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.shape
        p, g = self.config.patch_size, self.grid
        x = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def _unpatchify(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        c, p, g = self.config.in_channels, self.config.patch_size, self.grid
        x = x.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, g * p, g * p)

    def forward(self, x: Tensor, timestep: Tensor, cond: TextCondition, guidance: Tensor | None = None) -> Tensor:
        mask = cond.mask.to(cond.embeds.dtype)
        pooled = (cond.embeds * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        c = self.time_embed(timestep) + self.text_proj(pooled)
        if self.guidance_embed is not None:
            if guidance is None:
                raise ValueError("this network has a guidance embedder: pass the CFG scale `guidance`")
            c = c + self.guidance_embed(guidance * self.config.guidance_embed_scale * 1000)
        h = self.patch(self._patchify(x)) + self.pos
        context = None if self.text_tokens is None else self.text_tokens(cond.embeds)
        ctx_mask = None if self.text_tokens is None else mask
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, c, context, ctx_mask, use_reentrant=False)
            else:
                h = block(h, c, context, ctx_mask)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self._unpatchify(self.final(_modulate(self.final_norm(h), shift, scale)))
