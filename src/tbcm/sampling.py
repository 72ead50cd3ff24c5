"""Samplers: the teacher's guided ODE rollout and the student's few-step consistency sampler.

All states are TrigFlow states (``x0 = sigma_d * x0_flow``); angles are radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .errors import UserError
from .trigflow import consistency_fn, forward_noise, sampling_angles, trig_step

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x_t [B,...], t [B]) -> dx/dt [B,...]


@dataclass
class Rollout:
    """A first-order PF-ODE solve recorded at every route point.

    ``states[i]`` / ``velocities[i]`` are ``x`` and ``dx/dt`` at ``angles[:, i]`` (``[K, B, ...]``);
    ``final`` is the state at angle 0 (``[B, ...]``).
    """

    states: Tensor
    velocities: Tensor
    final: Tensor


def rollout(velocity: VelocityFn, x: Tensor, route: Tensor) -> Rollout:
    """Solve the PF-ODE from ``x`` at ``route[:, 0]`` through ``route[:, 1:]`` down to angle 0.

    ``route`` ``[B, K]`` decreasing angles per sample (one route per sample); each step is the
    exact first-order step :func:`tbcm.trigflow.trig_step` (DDIM; Euler in flow time), the last
    one goes to 0.  ``velocity`` is called once per point, never at angle 0.
    """
    route = route.to(device=x.device, dtype=x.dtype)
    ends = torch.cat([route, route.new_zeros(route.shape[0], 1)], dim=1)
    states, velocities = [], []
    for i in range(route.shape[1]):
        t, s = ends[:, i], ends[:, i + 1]
        u = velocity(x, t)
        states.append(x)
        velocities.append(u)
        x = trig_step(x, u, t, s)
    return Rollout(torch.stack(states), torch.stack(velocities), x)


@torch.no_grad()
def teacher_sample(teacher, cond, w: Tensor, noise: Tensor, steps: int = 16, shift: float = 2.5) -> Tensor:
    """Guided teacher samples ``[B, C, H, W]`` (TrigFlow space) from standard-normal ``noise``.

    ``steps`` points of the shifted route (no jitter), so ``steps`` guided teacher calls.
    """
    route = torch.tensor(sampling_angles(steps, shift)[:-1], dtype=noise.dtype).expand(noise.shape[0], -1)
    return rollout(lambda x, t: teacher.velocity(x, t, cond, w), teacher.sigma_d * noise, route).final


@torch.no_grad()
def student_sample(student, cond, w: Tensor, noise: Tensor, angles: list[float],
                   generator: torch.Generator | list[torch.Generator] | None = None,
                   fresh_noise: float = 1.0) -> Tensor:
    """Few-step consistency sampling: predict ``x0`` with ``f``, re-noise to the next angle.

    Re-noising uses ``eps = a eps_fresh + sqrt(1 - a^2) eps_hat`` with ``a = fresh_noise``:
    ``a = 1`` is sCM's fresh noise (what SanaSprintPipeline's SCMScheduler does); ``a < 1`` keeps
    part of the noise implied by the current state, ``eps_hat = (x_t - cos t x0) / (sin t sigma_d)``
    rescaled to unit RMS per sample (as TCD's gamma keeps part of the trajectory).

    ``angles`` runs from pi/2 down to 0 (``len(angles) - 1`` network calls), e.g. ``[pi/2, 0]``
    for one step.  ``noise`` ``[B, C, H, W]`` is standard normal; the fresh noise of later steps
    comes from ``generator`` -- one for the batch, or a list of ``B`` (image ``i`` draws from its
    own, so it does not depend on its batch).  Returns ``x0`` ``[B, C, H, W]`` in TrigFlow space.
    """
    sd = student.sigma_d
    x = sd * noise
    x0 = x
    for t_now, t_next in zip(angles[:-1], angles[1:]):
        t = torch.full((x.shape[0],), t_now, dtype=x.dtype, device=x.device)
        x0 = consistency_fn(x, t, student(x / sd, t, cond, w), sd)
        if t_next > 0:
            if isinstance(generator, list):
                eps = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator])
            else:
                eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            eps = eps.to(x.device)
            if fresh_noise < 1.0:
                implied = (x - torch.cos(t).view(-1, *[1] * (x.ndim - 1)) * x0) / (math.sin(t_now) * sd)
                implied = implied / implied.flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12).view(-1, *[1] * (x.ndim - 1))
                eps = fresh_noise * eps + math.sqrt(1.0 - fresh_noise**2) * implied
            x = forward_noise(x0, t_next, sd * eps)
    return x0


def student_angles(steps: int, shift: float = 2.5, routes: dict | None = None) -> list[float]:
    """Angles (radians, ``pi/2 .. 0``, ``steps + 1`` of them) of an n-step student sampler.

    ``routes`` maps a step count to its explicit middle angles (``steps - 1`` decreasing angles in
    ``(0, pi/2)``; keys ints or their strings, as saved in a student's metadata): ``{4: [0.34, 0.2,
    0.1]}`` runs ``[pi/2, 0.34, 0.2, 0.1, 0]`` at 4 steps. Other counts take the shifted route of
    ``shift``, ``steps`` points then 0 (its 2-step middle angle is ``arctan(shift)``).
    """
    mids = (routes or {}).get(steps, (routes or {}).get(str(steps)))
    if mids is not None:
        return [math.pi / 2, *map(float, check_route(steps, mids)), 0.0]
    return sampling_angles(steps, shift)


def check_route(steps, mids) -> list[float]:
    """``mids`` as floats if they are a valid explicit route for ``steps`` steps (see
    :func:`student_angles`), else a :class:`UserError` naming the fix."""
    try:
        n, mids = int(steps), [float(m) for m in mids]
    except (TypeError, ValueError):
        raise UserError(f"route {steps}: {mids!r} is not a step count and a list of angles: "
                        "give e.g. 0.34, 0.2, 0.1 for 4 steps") from None
    ends = [math.pi / 2, *mids, 0.0]
    if n < 2 or len(mids) != n - 1 or any(a <= b for a, b in zip(ends, ends[1:])):
        raise UserError(f"route for {steps} steps {mids}: give {max(n - 1, 1)} middle angle(s), decreasing, "
                        f"strictly between pi/2 and 0 (radians), e.g. 0.34, 0.2, 0.1 for 4 steps")
    return mids


def routes_by_steps(routes: list[list[float]]) -> dict[int, list[float]]:
    """``sampler.routes`` (lists of middle angles) as ``{steps: middle angles}``; raises
    :class:`UserError` on an invalid route or two routes for one step count."""
    out = {}
    for mids in routes:
        steps = len(mids) + 1
        if steps in out:
            raise UserError(f"two routes for {steps} steps ({out[steps]} and {list(mids)}): keep one")
        out[steps] = check_route(steps, mids)
    return out


def parse_routes(text: str) -> dict[int, list[float]]:
    """``"4:0.34/0.2/0.1,3:0.34/0.12"`` -> ``{4: [0.34, 0.2, 0.1], 3: [0.34, 0.12]}`` (CLI form of
    ``sampler.routes``); ``""`` or ``"none"`` -> ``{}`` (the shifted route at every count)."""
    if text.strip().lower() == "none":
        return {}
    routes = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        steps, _, mids = item.partition(":")
        try:
            routes[int(steps)] = check_route(int(steps), [float(m) for m in mids.split("/")])
        except ValueError:
            raise UserError(f"cannot read route {item!r}: write STEPS:ANGLE/ANGLE/..., e.g. 4:0.34/0.2/0.1") from None
    return routes


def to_pixels(x0: Tensor, sigma_d: float) -> Tensor:
    """TrigFlow-space samples to flow-space pixels clamped to ``[-1, 1]``."""
    return (x0 / sigma_d).clamp(-1, 1)
