"""The student: a copy of the teacher's network with a CFG-scale embedding, plus a logvar head."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .adapter import TrigFlowAdapter
from .builtin.layers import sinusoidal_embedding
from .condition import TextCondition


class LogvarHead(nn.Module):
    """Learned loss weighting ``logvar(t)``: ``t`` ``[B]`` (radians) -> ``[B]``. Starts at 0."""

    def __init__(self, freq_dim: int = 64):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear = nn.Linear(freq_dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: Tensor) -> Tensor:
        # Features of t rescaled to 0..1000, the range the timestep embeddings see.
        feats = sinusoidal_embedding(t * (1000 / (math.pi / 2)), self.freq_dim)
        return self.linear(feats.to(self.linear.weight.dtype)).squeeze(-1)


class Student(nn.Module):
    """``forward(x_norm [B,...], t [B] radians, cond, w [B]) -> F`` and ``logvar(t) -> [B]``.

    ``network`` is a family's student network (``teacher_network.with_guidance_embed()``, see
    :mod:`tbcm.models.family`).
    """

    def __init__(self, network: nn.Module, sigma_d: float, timestep_scale: float = 1000.0,
                 logvar_head: LogvarHead | None = None):
        super().__init__()
        self.F = TrigFlowAdapter(network, timestep_scale)
        self.logvar_head = logvar_head if logvar_head is not None else LogvarHead()
        self.sigma_d = float(sigma_d)

    @classmethod
    def from_bundle(cls, bundle) -> "Student":
        """The student of a student folder loaded by :func:`tbcm.models.bundle.load_bundle`."""
        return cls(bundle.network, bundle.meta.sigma_d, bundle.meta.timestep_scale, bundle.logvar_head)

    @property
    def network(self) -> nn.Module:
        return self.F.net

    def forward(self, x_norm: Tensor, t: Tensor, cond: TextCondition, w: Tensor, with_logvar: bool = False):
        """``F`` ``[B, ...]``; with ``with_logvar`` also ``logvar(t)`` ``[B]`` -- one call, so a
        DDP wrapper sees (and syncs) every parameter in its forward."""
        F = self.F(x_norm, t, cond, guidance=w)
        return (F, self.logvar_head(t)) if with_logvar else F

    def logvar(self, t: Tensor) -> Tensor:
        return self.logvar_head(t)
