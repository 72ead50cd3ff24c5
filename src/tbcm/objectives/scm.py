"""The continuous-time consistency (sCM) objective with its JVP backends. Pure tensor code.

With stop-gradient parameters (the current student, no grad):

* ``(F-, dF-) = JVP of F at (x_t / sigma_d, t) along (cos t sin t u / sigma_d, cos t sin t)``
* ``g = -cos^2 t (sigma_d F- - u) - r (cos t sin t x_t + sigma_d dF-)``
* ``g <- g / (||g|| + c)`` per sample: ``tangent_norm="l2"`` divides by the L2 norm over all
  elements (hustvl/TBCM: a unit-norm target), ``"rms"`` by the root mean square (Sana-Sprint's
  code; ``c`` then does not depend on the image size)
* ``loss = mean_masked( exp(-logvar(t)) * w(t) * mean((F - sg(F) - g)^2) + logvar(t) )``

``w(t) = 1 / (sigma_d tan t)`` when ``prior_weight`` is on, else 1.  ``F`` is the only forward
with gradients and ``sg(F)`` its own detached value (as hustvl/TBCM takes ``F-``), so the
residual is exactly ``-g`` whatever the precision of that forward; the fp32 JVP gives ``dF/dt``
and the ``F-`` inside ``g``.  The gradient equals the sCM gradient because ``sg(F) + g`` is a
constant target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..models.condition import TextCondition
from ..pairs.base import Pairs
from .adversarial import AdversarialConfig
from .distribution_matching import DistributionMatchingConfig

JVP_BACKENDS = ("autograd", "finite_difference")
TANGENT_NORMS = ("l2", "rms")
# Pairs at or above this angle are pure-noise points (t = pi/2 in float32 is 1.5707964; the
# route's jittered interior points are below it by far more than 1e-6 but for a chance of ~1e-5)
NOISE_POINT_ANGLE = math.pi / 2 - 1e-6


ENDPOINT_WEIGHT = 0.1  # objective.endpoint_weight's value with source=trajectory when left unset


@dataclass
class SCMConfig:
    tangent_norm: str = "rms"  # "l2" (hustvl/TBCM: g / (||g||_2 + c)) or "rms" (Sana-Sprint: g / (rms(g) + c))
    tangent_norm_c: float = 0.1
    warmup_steps: int = 500  # r = min(1, step / warmup_steps): tangent warmup
    calm_down_start: int = 0  # TBCM calm-down: r falls linearly to calm_down_to ...
    calm_down_end: int = 0  # ... between these steps (start == end == 0: off)
    calm_down_to: float = 0.75
    prior_weight: bool = True  # hustvl/TBCM's 1 / (sigma_d tan t); measured best (docs/results.md)
    jvp: str = "autograd"  # "autograd" (torch.func.jvp) or "finite_difference"
    fd_eps: float = 1e-3  # step of the central finite difference, in units of the tangent
    # The trajectory-endpoint term: endpoint_weight * mean over kept pairs of |f(x_t, t) - x0|^2 /
    # sigma_d^2 (per element), x0 the pair's own trajectory end. The rollout is a teacher ODE solve,
    # so f(x_t, t) = x0 is the consistency condition itself, with a weight (sin^2 t in F units) that
    # is largest next to pi/2 -- where the sCM tangent (a cos t factor) and the prior weight
    # (1 / tan t) both vanish and nothing else pins the 1-step sample's F. 0 = off. None (the
    # default) = the recipe's: tbcm.config.validate makes it ENDPOINT_WEIGHT with source=trajectory
    # (1-step adherence +0.5 to +1 point on the digits, docs/results.md) and 0 with the other
    # sources, which have no trajectory end; the loss alone reads None as 0
    endpoint_weight: float | None = None
    # The endpoint term only on pairs at t >= this angle (radians; 0 = every pair): the 1-step
    # sample is drawn at pi/2, where the sCM loss is weakest, while at lower angles the sCM loss
    # already constrains F; the term's sum is still divided by all kept pairs.
    endpoint_min_angle: float = 0.0
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)  # off unless weight > 0
    # rCM's score regulariser: a DMD term with a fake score trained on the student's samples
    distribution_matching: DistributionMatchingConfig = field(default_factory=DistributionMatchingConfig)


def tangent_ratio(step: int, cfg: SCMConfig) -> float:
    """``r`` at a training step: linear warmup to 1, then the optional linear calm-down."""
    r = 1.0 if cfg.warmup_steps <= 0 else min(1.0, step / cfg.warmup_steps)
    if cfg.calm_down_end > cfg.calm_down_start and step > cfg.calm_down_start:
        frac = min(1.0, (step - cfg.calm_down_start) / (cfg.calm_down_end - cfg.calm_down_start))
        r = min(r, 1.0 + frac * (cfg.calm_down_to - 1.0))
    return r


def jvp_autograd(fn: Callable, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``(fn(*primals), d fn . tangents)`` by forward-mode AD (``torch.func.jvp``), no graph kept."""
    with torch.no_grad():
        return torch.func.jvp(fn, primals, tangents)


def jvp_finite_difference(fn: Callable, primals: tuple[Tensor, ...], tangents: tuple[Tensor, ...],
                          eps: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Central-difference JVP: ``(fn(p + eps v) - fn(p - eps v)) / (2 eps)``; error ``O(eps^2)``.

    Needs three forwards (one batched pair plus the primal); works where forward-mode AD does not
    (fused attention kernels, custom CUDA ops).
    """
    with torch.no_grad():
        out = fn(*primals)
        plus = fn(*(p + eps * v for p, v in zip(primals, tangents)))
        minus = fn(*(p - eps * v for p, v in zip(primals, tangents)))
        return out, (plus - minus) / (2 * eps)


def _bc(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def scm_tangent(F_minus: Tensor, dF_minus: Tensor, x_t: Tensor, u: Tensor, t: Tensor, sigma_d: float,
                r: float) -> Tensor:
    """The raw sCM tangent ``g = -cos^2 t (sigma_d F- - u) - r (cos t sin t x_t + sigma_d dF-)``.

    ``F_minus`` ``[B, ...]`` is the stop-gradient student at ``x_t / sigma_d``; ``dF_minus`` its
    JVP along ``(cos t sin t u / sigma_d, cos t sin t)``; ``u`` the teacher's ``dx_t/dt``; ``t``
    ``[B]`` radians.  With ``r = 1``, ``g = cos t * d/dt f(x_t, t)`` along the teacher's ODE
    (``f`` the student's consistency function): zero exactly when the student is consistent.
    """
    cos, sin = _bc(torch.cos(t), x_t), _bc(torch.sin(t), x_t)
    return -cos**2 * (sigma_d * F_minus - u) - r * (cos * sin * x_t + sigma_d * dF_minus)


def normalise_tangent(g: Tensor, norm: str, c: float) -> tuple[Tensor, Tensor]:
    """``(g / (size(g) + c), rms(g))`` per sample; ``size`` is the L2 norm over all elements
    (``"l2"``, hustvl/TBCM) or the root mean square (``"rms"``, Sana-Sprint). ``g`` ``[B, ...]``."""
    g_sq = g.flatten(1).pow(2)
    g_rms = g_sq.mean(1).sqrt()
    if norm == "l2":
        size = g_sq.sum(1).sqrt()
    elif norm == "rms":
        size = g_rms
    else:
        raise ValueError(f"unknown tangent norm {norm!r}; choose one of {TANGENT_NORMS}")
    return g / _bc(size + c, g), g_rms


def scm_loss(student, pairs: Pairs, sigma_d: float, r: float, cfg: SCMConfig, jvp_student=None,
             denominator: float | Tensor | None = None, bf16: bool = False,
             extra: tuple | None = None, extra_out: list | None = None) -> tuple[Tensor, dict]:
    """sCM loss on a batch of pairs.

    ``student(x_norm, t, cond, w, with_logvar=True) -> (F, logvar)`` is the gradient path (it may
    be a DDP wrapper); ``jvp_student(x_norm, t, cond, w) -> F`` the stop-gradient path (default:
    ``student``; pass the unwrapped module under DDP).  The loss is
    ``sum(mask * loss_i) / denominator`` with ``denominator`` the number of kept pairs by default;
    under DDP pass ``global kept pairs / world size`` so averaged gradients equal the global mean.
    ``bf16`` runs the gradient forward under bfloat16 autocast; the JVP and the target
    ``F- + g`` stay in fp32 (forward-mode AD in bf16 loses the small differences the target is
    made of); the residual's ``F-`` is the gradient forward's own detached output.  Returns the scalar loss (with gradients into the student's parameters) and
    statistics as detached 0-d tensors (``loss``, ``mse``, ``g_rms``, ``kept``).

    ``extra = (x_norm [K,...], t [K], cond, w [K])`` rides along in the gradient forward (one call:
    the adversarial term's fake samples); its ``F`` ``[K, ...]`` (with gradients) is appended to
    ``extra_out``.
    """
    jvp_student = student if jvp_student is None else jvp_student
    x_t, t, u = pairs.x_t, pairs.t.to(pairs.x_t.dtype), pairs.u
    cos, sin = _bc(torch.cos(t), x_t), _bc(torch.sin(t), x_t)

    def F_of(x_norm: Tensor, tt: Tensor) -> Tensor:
        return jvp_student(x_norm, tt, pairs.cond, pairs.w)

    primals = (x_t / sigma_d, t)
    tangents = (cos * sin * u / sigma_d, torch.cos(t) * torch.sin(t))
    if cfg.jvp == "autograd":
        F_minus, dF_minus = jvp_autograd(F_of, primals, tangents)
    elif cfg.jvp == "finite_difference":
        F_minus, dF_minus = jvp_finite_difference(F_of, primals, tangents, cfg.fd_eps)
    else:
        raise ValueError(f"unknown JVP backend {cfg.jvp!r}; choose one of {JVP_BACKENDS}")

    g, g_rms = normalise_tangent(scm_tangent(F_minus, dF_minus, x_t, u, t, sigma_d, r), cfg.tangent_norm,
                                 cfg.tangent_norm_c)

    inputs = (*primals, pairs.cond, pairs.w)
    if extra is not None:
        inputs = (torch.cat([primals[0], extra[0]]), torch.cat([t, extra[1].to(t.dtype)]),
                  TextCondition.cat([pairs.cond, extra[2]]), torch.cat([pairs.w, extra[3]]))
    with torch.autocast(device_type=x_t.device.type, dtype=torch.bfloat16, enabled=bf16):
        F, logvar = student(*inputs, with_logvar=True)
    if extra is not None:
        n = x_t.shape[0]
        extra_out.append(F[n:].to(F_minus.dtype))
        F, logvar = F[:n], logvar[:n]
    F = F.to(F_minus.dtype)
    # sg(F), not the JVP's F-: under bf16 the two differ by rounding that would bias every target
    per_sample = (F - F.detach() - g).pow(2).flatten(1).mean(1)
    logvar = logvar.to(per_sample.dtype)
    weight = 1.0 / (sigma_d * torch.tan(t)) if cfg.prior_weight else torch.ones_like(t)
    loss_i = torch.exp(-logvar) * weight * per_sample + logvar
    mask = pairs.mask.to(loss_i.dtype)
    # Pure-noise points (t = pi/2, pairs.noise_point) carry no sCM term: its weight is exactly zero
    # there, and the logvar alone would be driven to -inf. They are still counted in the denominator.
    scm_mask = mask * (pairs.t < NOISE_POINT_ANGLE).to(mask.dtype)
    if denominator is None:
        denom = mask.sum().clamp(min=1.0)
    else:  # a number or a tensor (the all-reduced count under DDP): no host sync either way
        denom = torch.as_tensor(denominator, dtype=loss_i.dtype, device=loss_i.device).clamp(min=1e-12)
    loss = (loss_i * scm_mask).sum() / denom
    endpoint = None
    if cfg.endpoint_weight:  # None (unresolved) or 0: off
        if pairs.x0 is None:
            raise ValueError("objective.endpoint_weight needs each pair's trajectory end (pairs.x0); "
                             "the pair source must keep it (keep_final)")
        f = cos * x_t - sin * sigma_d * F  # the consistency function, with gradients through F
        endpoint = (f - pairs.x0.to(f.dtype)).pow(2).flatten(1).mean(1) / sigma_d**2
        end_mask = mask * (pairs.t >= cfg.endpoint_min_angle).to(mask.dtype)
        loss = loss + cfg.endpoint_weight * (endpoint * end_mask).sum() / denom
    # 0-d tensors, not floats: a float() here would stall a GPU before the backward pass; the
    # trainer copies them to the host together with the gradient norm, once per step.
    stats = {"loss": loss.detach(), "mse": (per_sample.detach() * scm_mask).sum() / scm_mask.sum().clamp(min=1.0),
             "g_rms": g_rms.mean(), "kept": mask.mean()}
    if endpoint is not None:
        stats["endpoint"] = (endpoint.detach() * end_mask).sum() / end_mask.sum().clamp(min=1.0)
    return loss, stats
