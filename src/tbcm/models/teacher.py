"""The frozen, guided teacher in TrigFlow units, as the pair sources and samplers use it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .adapter import TrigFlowAdapter, interval_guided_F
from .bundle import Bundle
from .condition import TextCondition


class Teacher(nn.Module):
    """``velocity(x_t, t, cond, w)`` = guided ``dx_t/dt = sigma_d F_w(x_t / sigma_d, t)``.

    ``x_t`` ``[B, C, H, W]`` is the unnormalised TrigFlow state, ``t`` ``[B]`` angles in radians,
    ``w`` ``[B]`` CFG scales.  Parameters are frozen; every call runs without gradients.

    ``guidance_interval`` ``(lo, hi]`` (angles, radians) guides only there and runs the conditional
    teacher elsewhere (:func:`~tbcm.models.adapter.interval_scales`); ``None``: guided everywhere.
    """

    def __init__(self, network: nn.Module, encoder: nn.Module, sigma_d: float, timestep_scale: float = 1000.0):
        super().__init__()
        self.F = TrigFlowAdapter(network, timestep_scale)
        self.encoder = encoder
        self.sigma_d = float(sigma_d)
        self.requires_grad_(False)
        self.eval()
        self.null_cond = encoder.encode([""])
        self.guidance_interval: tuple[float, float] | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "Teacher":
        return cls(bundle.network, bundle.encoder, bundle.meta.sigma_d, bundle.meta.timestep_scale)

    @torch.no_grad()
    def velocity(self, x_t: Tensor, t: Tensor, cond: TextCondition, w: Tensor) -> Tensor:
        sd = self.sigma_d
        if self.null_cond.embeds.device != x_t.device:  # moved once, not copied on every call
            self.null_cond = self.null_cond.to(x_t.device)
        return sd * interval_guided_F(self.F, x_t / sd, t, cond, self.null_cond, w, self.guidance_interval)
