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
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..pairs.base import Pairs
from .terms import LossTerm, StepBatch, TermContext

JVP_BACKENDS = ("autograd", "finite_difference")
TANGENT_NORMS = ("l2", "rms")
# Pairs at or above this angle are pure-noise points (t = pi/2 in float32 is 1.5707964; the
# route's jittered interior points are below it by far more than 1e-6 but for a chance of ~1e-5)
NOISE_POINT_ANGLE = math.pi / 2 - 1e-6


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

    def check(self, cfg, check) -> None:
        check(self.jvp in JVP_BACKENDS, "objective.jvp", self.jvp, f"one of {', '.join(JVP_BACKENDS)}")
        check(self.tangent_norm in TANGENT_NORMS, "objective.tangent_norm", self.tangent_norm,
              f"one of {', '.join(TANGENT_NORMS)}")
        check(self.tangent_norm_c >= 0, "objective.tangent_norm_c", self.tangent_norm_c, ">= 0")
        check(self.warmup_steps >= 0, "objective.warmup_steps", self.warmup_steps, ">= 0")
        check(self.calm_down_end >= self.calm_down_start >= 0, "objective.calm_down_end", self.calm_down_end,
              ">= objective.calm_down_start >= 0")
        check(0 <= self.calm_down_to <= 1, "objective.calm_down_to", self.calm_down_to, "in [0, 1]")
        check(math.isfinite(self.fd_eps) and self.fd_eps > 0, "objective.fd_eps", self.fd_eps, "a positive number")


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


def scm_target(jvp_student, pairs: Pairs, sigma_d: float, r: float, cfg: SCMConfig) -> tuple[Tensor, Tensor]:
    """``(g, rms(g))``: the normalised sCM tangent ``[B, ...]`` of each pair, from the JVP of the
    stop-gradient student ``jvp_student(x_norm, t, cond, w) -> F`` (fp32, no graph kept)."""
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
    return normalise_tangent(scm_tangent(F_minus, dF_minus, x_t, u, t, sigma_d, r), cfg.tangent_norm,
                             cfg.tangent_norm_c)


def scm_residual_loss(F: Tensor, logvar: Tensor, g: Tensor, pairs: Pairs, sigma_d: float, cfg: SCMConfig,
                      denom: Tensor) -> tuple[Tensor, dict]:
    """``(loss, stats)`` of the gradient forward's ``F`` ``[B, ...]`` (fp32, with gradients) and
    ``logvar`` ``[B]`` against the target ``sg(F) + g``: ``sum(mask * loss_i) / denom``."""
    t = pairs.t.to(pairs.x_t.dtype)
    # sg(F), not the JVP's F-: under bf16 the two differ by rounding that would bias every target
    per_sample = (F - F.detach() - g).pow(2).flatten(1).mean(1)
    logvar = logvar.to(per_sample.dtype)
    weight = 1.0 / (sigma_d * torch.tan(t)) if cfg.prior_weight else torch.ones_like(t)
    loss_i = torch.exp(-logvar) * weight * per_sample + logvar
    mask = pairs.mask.to(loss_i.dtype)
    # A pure-noise point (t = pi/2) carries no sCM term: its weight is exactly zero there, and the
    # logvar alone would be driven to -inf. It still counts in the denominator.
    scm_mask = mask * (pairs.t < NOISE_POINT_ANGLE).to(mask.dtype)
    loss = (loss_i * scm_mask).sum() / denom
    # 0-d tensors, not floats: a float() here would stall a GPU before the backward pass; the
    # trainer copies them to the host together with the gradient norm, once per step.
    return loss, {"mse": (per_sample.detach() * scm_mask).sum() / scm_mask.sum().clamp(min=1.0), "kept": mask.mean()}


def scm_loss(student, pairs: Pairs, sigma_d: float, r: float, cfg: SCMConfig, jvp_student=None,
             denominator: float | Tensor | None = None, bf16: bool = False) -> tuple[Tensor, dict]:
    """sCM loss on a batch of pairs (what :class:`ScmTerm` computes inside the trainer's one
    gradient forward, as a function).

    ``student(x_norm, t, cond, w, with_logvar=True) -> (F, logvar)`` is the gradient path (it may
    be a DDP wrapper); ``jvp_student(x_norm, t, cond, w) -> F`` the stop-gradient path (default:
    ``student``; pass the unwrapped module under DDP).  The loss is
    ``sum(mask * loss_i) / denominator`` with ``denominator`` the number of kept pairs by default;
    under DDP pass ``global kept pairs / world size`` so averaged gradients equal the global mean.
    ``bf16`` runs the gradient forward under bfloat16 autocast; the JVP and the target
    ``F- + g`` stay in fp32 (forward-mode AD in bf16 loses the small differences the target is
    made of); the residual's ``F-`` is the gradient forward's own detached output.  Returns the
    scalar loss (with gradients into the student's parameters) and statistics as detached 0-d
    tensors (``loss``, ``mse``, ``g_rms``, ``kept``).
    """
    g, g_rms = scm_target(student if jvp_student is None else jvp_student, pairs, sigma_d, r, cfg)
    x_t = pairs.x_t
    with torch.autocast(device_type=x_t.device.type, dtype=torch.bfloat16, enabled=bf16):
        F, logvar = student(x_t / sigma_d, pairs.t.to(x_t.dtype), pairs.cond, pairs.w, with_logvar=True)
    F = F.to(g.dtype)
    loss, stats = scm_residual_loss(F, logvar, g, pairs, sigma_d, cfg, StepBatch(pairs, 0, r, denominator).denom(F))
    return loss, {"loss": loss.detach(), **stats, "g_rms": g_rms.mean()}


class ScmTerm(LossTerm):
    """The sCM loss, always on (weight 1): the JVP target before the gradient forward, the
    residual on the pairs' rows after it."""

    name = "scm"

    def __init__(self, ctx: TermContext):
        super().__init__(ctx, 1.0)
        self._g = self._g_rms = None

    @classmethod
    def build(cls, ctx: TermContext) -> "ScmTerm":
        return cls(ctx)

    def prepare(self, batch: StepBatch) -> None:
        self._g, self._g_rms = scm_target(self.ctx.student, batch.pairs, self.ctx.sigma_d, batch.r, self.ctx.cfg.objective)

    def loss(self, batch: StepBatch, F: Tensor, logvar: Tensor, extra_F) -> tuple[Tensor, dict]:
        loss, stats = scm_residual_loss(F, logvar, self._g, batch.pairs, self.ctx.sigma_d, self.ctx.cfg.objective,
                                        batch.denom(F))
        stats["g_rms"] = self._g_rms.mean()
        self._g = self._g_rms = None
        return loss, stats
