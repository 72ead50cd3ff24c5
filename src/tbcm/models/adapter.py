"""One interface for teacher and student: ``F(x_t / sigma_d, t, cond, w) -> F`` in TrigFlow units.

:class:`TrigFlowAdapter` wraps any flow-matching velocity network
``net(x_flow [B,...], timestep [B], cond, guidance=None) -> v [B,...]`` (``timestep`` is
``timestep_scale * tau``; the built-in TinyDiT uses 1000, Sana and FLUX 1) with the exact, training-free
flow-to-TrigFlow conversion of :mod:`tbcm.trigflow`.  Nothing downstream knows which network it is.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..trigflow import flow_input_from_trig, flow_time_from_angle, trig_F_from_flow_velocity
from .condition import TextCondition

TrigFlowFn = Callable[..., Tensor]


class TrigFlowAdapter(nn.Module):
    """``forward(x_norm [B,...], t [B] radians, cond, guidance [B] | None) -> F [B,...]``."""

    def __init__(self, net: nn.Module, timestep_scale: float = 1000.0):
        super().__init__()
        self.net = net
        self.timestep_scale = timestep_scale

    def forward(self, x_norm: Tensor, t: Tensor, cond, guidance: Tensor | None = None) -> Tensor:
        x_flow = flow_input_from_trig(x_norm, t)
        timestep = flow_time_from_angle(t) * self.timestep_scale
        kwargs = {} if guidance is None else {"guidance": guidance}
        v = self.net(x_flow, timestep, cond, **kwargs)
        return trig_F_from_flow_velocity(x_flow, v, t)


def valid_interval(values) -> bool:
    """Whether ``values`` is a guidance interval ``[lo, hi]``: angles with ``0 <= lo < hi <= pi/2``."""
    values = list(values)
    return (len(values) == 2 and all(math.isfinite(a) for a in values)
            and 0 <= values[0] < values[1] <= math.pi / 2 + 1e-6)


def interval_scales(w: Tensor, t: Tensor, interval: tuple[float, float] | None) -> Tensor:
    """The CFG scale ``[B]`` each sample is guided with at angle ``t`` ``[B]`` (TrigFlow, radians).

    Guidance in a limited interval (Kynkaanniemi et al., 2024): ``w`` where ``lo < t <= hi``, and
    ``1`` -- the conditional teacher, no guidance -- elsewhere; ``interval=None`` guides at every
    angle.  ``t = pi/2`` is pure noise, ``t -> 0`` the image: ``(0, 0.5]`` guides only the last,
    detail-forming part of a trajectory, where guidance adds adherence at little cost to diversity.
    """
    if interval is None:
        return w
    lo, hi = interval
    t = t.to(w.device)
    return torch.where((t > lo) & (t <= hi), w, torch.ones_like(w))


def interval_guided_F(F_fn: TrigFlowFn, x_norm: Tensor, t: Tensor, cond: TextCondition, null_cond: TextCondition,
                      w: Tensor, interval: tuple[float, float] | None) -> Tensor:
    """:func:`guided_F` with the scales of :func:`interval_scales`. Where no sample of the batch is
    guided (every angle outside the interval: most of a rollout's points for ``(0, 0.5]``, since a
    route point's jitter keeps the batch's angles in one stratum) only the conditional pass runs,
    ``[B]`` instead of ``[2B]``; without an interval nothing changes."""
    if interval is None:
        return guided_F(F_fn, x_norm, t, cond, null_cond, w)
    w = interval_scales(w, t, interval)
    if not bool((w != 1).any()):  # one host sync a call, only with an interval set
        return F_fn(x_norm, t, cond)
    return guided_F(F_fn, x_norm, t, cond, null_cond, w)


def guided_F(
    F_fn: TrigFlowFn, x_norm: Tensor, t: Tensor, cond: TextCondition, null_cond: TextCondition, w: Tensor
) -> Tensor:
    """Classifier-free guidance in TrigFlow units: ``F_null + w (F_cond - F_null)``.

    One batched call of ``F_fn`` on ``[2B]`` inputs.  ``null_cond`` has batch 1 (broadcast) or B;
    ``w`` is ``[B]``.  The conversion from flow velocity is affine in ``v`` with the same
    coefficients for both halves, so guiding ``F`` equals guiding the teacher's ``v``.
    """
    b = x_norm.shape[0]
    if len(null_cond) == 1:
        null_cond = null_cond.apply(lambda z: z.expand(b, *z.shape[1:]))
    both = F_fn(torch.cat([x_norm, x_norm]), torch.cat([t, t]), TextCondition.cat([cond, null_cond]))
    f_cond, f_null = both.chunk(2)
    wb = w.to(f_cond.dtype).reshape(b, *([1] * (x_norm.ndim - 1)))
    return f_null + wb * (f_cond - f_null)
