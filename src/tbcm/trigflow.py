"""TrigFlow mathematics: pure functions, no modules, no state.

Units, used everywhere in tbcm:

* ``t``   -- TrigFlow time, an angle in radians in ``[0, pi/2]``; ``t = pi/2`` is pure noise.
* ``tau`` -- flow-matching time in ``[0, 1]``; ``tau = 1`` is pure noise.
* TrigFlow state ``x_t = cos(t) x0 + sin(t) z`` with ``z ~ N(0, sigma_d^2 I)``.
* Flow state ``x_tau = (1 - tau) x0_flow + tau n`` with ``n ~ N(0, I)``.

The two spaces differ only by a scale: ``x0 = sigma_d * x0_flow`` and
``x_t / sigma_d = (sin t + cos t) * x_tau``.  The network ``F`` always sees the normalised
state ``x_t / sigma_d``; the PF-ODE is ``dx_t/dt = sigma_d * F(x_t / sigma_d, t)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF_PI = math.pi / 2


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample time ``[B]`` so it broadcasts against ``like`` ``[B, ...]``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))


def flow_time_from_angle(t: Tensor) -> Tensor:
    """Flow time ``tau = sin t / (sin t + cos t)`` for TrigFlow angle ``t`` (radians)."""
    s, c = torch.sin(t), torch.cos(t)
    return s / (s + c)


def angle_from_flow_time(tau: Tensor) -> Tensor:
    """TrigFlow angle ``t = atan2(tau, 1 - tau)`` (radians) for flow time ``tau`` in ``[0, 1]``."""
    tau = torch.as_tensor(tau)
    return torch.atan2(tau, 1 - tau)


def flow_input_from_trig(x_norm: Tensor, t: Tensor) -> Tensor:
    """Flow state ``x_tau`` from the normalised TrigFlow state ``x_t / sigma_d``.

    ``x_tau = x_norm * sqrt(tau^2 + (1 - tau)^2) = x_norm / (sin t + cos t)``.
    Shapes: ``x_norm`` ``[B, ...]``, ``t`` ``[B]`` or scalar.
    """
    tb = _bcast(t, x_norm)
    return x_norm / (torch.sin(tb) + torch.cos(tb))


def trig_F_from_flow_velocity(x_flow: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """TrigFlow network output ``F`` from a flow-matching velocity ``v`` (exact, training-free).

    ``F = ((1 - 2 tau) x_flow + (1 - 2 tau + 2 tau^2) v) / sqrt(tau^2 + (1 - tau)^2)`` with
    ``tau = flow_time_from_angle(t)``.  For ``v = n - x0_flow`` this is ``cos t n - sin t x0_flow``,
    the TrigFlow velocity in normalised units.  Shapes: ``[B, ...]`` and ``t`` ``[B]``.
    """
    tau = flow_time_from_angle(_bcast(t, x_flow))
    norm = torch.sqrt(tau**2 + (1 - tau) ** 2)
    return ((1 - 2 * tau) * x_flow + (1 - 2 * tau + 2 * tau**2) * v) / norm


def consistency_fn(x_t: Tensor, t: Tensor, F: Tensor, sigma_d: float) -> Tensor:
    """Consistency function ``f(x_t, t) = cos t x_t - sin t sigma_d F`` (TrigFlow units).

    ``x_t`` is the unnormalised state ``[B, ...]``; ``F`` the network output at ``x_t / sigma_d``.
    Returns the predicted clean sample ``x0`` (TrigFlow space, ``= sigma_d * x0_flow``).
    """
    tb = _bcast(t, x_t)
    return torch.cos(tb) * x_t - torch.sin(tb) * sigma_d * F


def forward_noise(x0: Tensor, t: Tensor | float, z: Tensor) -> Tensor:
    """The TrigFlow forward process ``x_t = cos(t) x0 + sin(t) z`` with ``z ~ N(0, sigma_d^2)``
    (already scaled); ``t`` a scalar or per-sample ``[B]`` angles. Shapes ``[B, ...]``."""
    tb = _bcast(t, x0)
    return torch.cos(tb) * x0 + torch.sin(tb) * z


def trig_step(x_t: Tensor, u: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """First-order exact step of the PF-ODE from angle ``t`` to angle ``s`` (DDIM in TrigFlow).

    ``x_s = cos(t - s) x_t - sin(t - s) u`` where ``u = sigma_d F`` is the velocity ``dx/dt`` at
    ``(x_t, t)``.  It equals the Euler step of the flow ODE in flow time.  Shapes ``[B, ...]``.
    """
    d = _bcast(torch.as_tensor(t) - torch.as_tensor(s), x_t)
    return torch.cos(d) * x_t - torch.sin(d) * u


def shifted_sigmas(num_points: int, shift: float) -> Tensor:
    """Reference flow schedule: ``num_points`` flow times from 1 down to ``1/num_points``.

    ``sigma_i = 1 - i / num_points`` (i = 0..K-1), then ``sigma' = s sigma / (1 + (s - 1) sigma)``.
    Returns ``[K]`` float64, strictly decreasing, first entry 1.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    sigma = 1.0 - torch.arange(num_points, dtype=torch.float64) / num_points
    return shift * sigma / (1 + (shift - 1) * sigma)


def reference_route(num_points: int, shift: float) -> Tensor:
    """TrigFlow angles of the shifted flow schedule: ``[K]`` float64, ``route[0] = pi/2``.

    ``t = atan(sigma / (1 - sigma))``; strictly decreasing, all in ``(0, pi/2]``.
    """
    route = angle_from_flow_time(shifted_sigmas(num_points, shift))
    route[0] = HALF_PI
    return route


def jitter_route_official(route: Tensor, generator: torch.Generator | None = None, batch: int = 1) -> Tensor:
    """Stratified jitter of hustvl/TBCM (``sample_ordered_timesteps_from_ref``), the training route's.

    Angle ``j >= 1`` is drawn from ``(route[j], route[j-1])``, the interval *above* reference point
    ``j``: the first trained angle lies just below ``pi/2`` and the last above ``route[K-1]``
    (0.0063 rad for :func:`official_reference_route`), so training covers ``(route[K-1], pi/2)``.
    ``route`` ``[K]`` decreasing with ``route[0] = pi/2``; returns ``[batch, K]`` (float64).
    """
    return _draw_in_intervals(route[:1], route[1:], route[:-1], generator, batch)


def _draw_in_intervals(first: Tensor, lo: Tensor, hi: Tensor, generator: torch.Generator | None,
                       batch: int) -> Tensor:
    """``[batch, 1 + len(lo)]``: ``first``, then one uniform draw in each ``(lo[i], hi[i]]``."""
    u = torch.rand(batch, len(lo), generator=generator, dtype=lo.dtype)
    # 1 - u is in (0, 1]: never lands exactly on the lower end, so points stay distinct.
    inner = lo + (1 - u) * (hi - lo)
    return torch.cat([first.expand(batch, 1), inner], dim=1)


def official_reference_route(num_points: int, shift: float, num_train_timesteps: int = 1000) -> Tensor:
    """The reference route of hustvl/TBCM (``compute_refer_route``): ``[K]`` float64 angles.

    Reproduced exactly, including that the shift is applied twice: the 1000 training sigmas
    ``i / 1000`` are shifted once to find ``sigma_min`` (``s 0.001 / (1 + (s - 1) 0.001)``); ``K``
    sigmas linear from 1 to ``sigma_min`` are then shifted again and mapped to angles
    ``atan(sigma / (1 - sigma))``, with the first set to ``pi/2``.  For ``K = 16, s = 2.5``:
    1.5708 1.5423 ... 0.1832 0.0063 (the last angle, not 0, bounds the prior weight ``1/tan t``).
    """
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")

    def shifted(sigma: Tensor) -> Tensor:
        return shift * sigma / (1 + (shift - 1) * sigma)

    sigma_min = float(shifted(torch.tensor(1.0 / num_train_timesteps, dtype=torch.float64)))
    sigma = shifted(torch.linspace(1.0, sigma_min, num_points, dtype=torch.float64))
    route = torch.atan(sigma / (1 - sigma).clamp(min=1e-300))
    route[0] = HALF_PI
    return route


def sampling_angles(steps: int, shift: float) -> list[float]:
    """Angles for an ``steps``-step sampler: the shifted reference route plus the end point 0.

    Returns ``steps + 1`` decreasing angles starting at ``pi/2`` and ending at 0, e.g.
    ``steps=2, shift=2.5`` gives ``[pi/2, 1.19, 0]`` (Sana-Sprint uses ~1.3 for its middle step).
    """
    return [*reference_route(steps, shift).tolist(), 0.0]
