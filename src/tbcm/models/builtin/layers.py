"""Building blocks shared by the built-in networks.

Every op here supports forward-mode AD (``torch.func.jvp``): attention is written out as plain
matrix products and softmax instead of a fused kernel, and there is no BatchNorm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MathAttention(nn.Module):
    """Multi-head self-attention (or cross-attention when ``context`` is given), math path.

    ``x`` ``[B, N, D]``; ``context`` ``[B, M, D]``; ``key_mask`` ``[B, M]`` (1 = attend).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        context = x if context is None else context
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        if key_mask is not None:
            # finfo.min rather than -inf: a row with every key masked stays finite (uniform).
            blocked = (key_mask[:, None, None, :] <= 0)
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
        out = scores.softmax(dim=-1) @ v
        return self.out(out.transpose(1, 2).reshape(b, n, d))


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features ``[B, dim]`` of scalar ``values`` ``[B]`` (e.g. a timestep in 0..1000)."""
    half = dim // 2
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32  # never below fp32
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=dtype) / half)
    args = values.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ScalarEmbedder(nn.Module):
    """Sinusoidal features of a scalar then a 2-layer MLP: ``[B]`` -> ``[B, dim]``."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(values, self.freq_dim).to(self.mlp[0].weight.dtype))
