"""The trajectory-endpoint term: the consistency condition ``f(x_t, t) = x0`` read off the rollout.

``weight * sum over kept pairs of |f(x_t, t) - x0|^2 / sigma_d^2 (mean per element) / kept``, with
``x0`` the end of the pair's own teacher trajectory (``Pairs.x0``) and
``f(x_t, t) = cos t x_t - sin t sigma_d F(x_t / sigma_d, t)`` the student's consistency function
through the gradient forward's ``F``. The rollout is a teacher ODE solve, so this is the
consistency condition itself, with a weight (``sin^2 t`` in ``F`` units) that is largest next to
pi/2, where the sCM tangent (a ``cos t`` factor) and the prior weight (``1 / tan t``) both vanish.
No extra teacher or student call. Off by default (hustvl/TBCM has no such term); a recipe turns
it on (``objective.endpoint.weight``), e.g. configs/distill_digits.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..pairs.base import Pairs
from .terms import LossTerm, StepBatch, TermContext


@dataclass
class EndpointConfig:
    weight: float = 0.0  # 0 = off
    # only pairs at t >= min_angle (TrigFlow radians; 0 = every pair); the sum is still divided by
    # all kept pairs
    min_angle: float = 0.0

    def check(self, cfg, check) -> None:
        check(math.isfinite(self.weight) and self.weight >= 0, "objective.endpoint.weight", self.weight, ">= 0 (0 = off)")
        check(0 <= self.min_angle < math.pi / 2, "objective.endpoint.min_angle", self.min_angle,
              "in [0, pi/2) radians (TrigFlow time; 0 = every pair)")
        check(self.min_angle == 0 or self.weight > 0, "objective.endpoint.min_angle", self.min_angle,
              "0 unless objective.endpoint.weight > 0 (it windows that term)")
        check(self.weight == 0 or cfg.source == "trajectory", "objective.endpoint.weight", self.weight,
              f"0 with source={cfg.source} (the target is each pair's own trajectory end): drop it or set 0")


def endpoint_loss(F: Tensor, pairs: Pairs, sigma_d: float, min_angle: float, denom: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum of the windowed per-pair error / denom, mean error over the window)``.

    ``F`` ``[B, C, H, W]`` the student's F at ``pairs.x_t / sigma_d`` (with gradients), ``pairs.x0``
    the trajectory ends ``[B, C, H, W]`` (TrigFlow space), ``pairs.t`` ``[B]`` radians."""
    if pairs.x0 is None:
        raise ValueError("the endpoint term needs each pair's trajectory end (pairs.x0); the pair source must "
                         "keep it (keep_final)")
    x_t, t = pairs.x_t, pairs.t.to(pairs.x_t.dtype)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    f = torch.cos(t).view(shape) * x_t - torch.sin(t).view(shape) * sigma_d * F  # with gradients through F
    error = (f - pairs.x0.to(f.dtype)).pow(2).flatten(1).mean(1) / sigma_d**2
    window = pairs.mask.to(error.dtype) * (pairs.t >= min_angle).to(error.dtype)
    return (error * window).sum() / denom, (error.detach() * window).sum() / window.sum().clamp(min=1.0)


class EndpointTerm(LossTerm):
    name = "endpoint"
    needs_trajectory_end = True

    def __init__(self, ctx: TermContext, cfg: EndpointConfig):
        super().__init__(ctx, cfg.weight)
        self.min_angle = cfg.min_angle

    def loss(self, batch: StepBatch, F: Tensor, logvar: Tensor, extra_F) -> tuple[Tensor, dict]:
        loss, mean_error = endpoint_loss(F, batch.pairs, self.ctx.sigma_d, self.min_angle, batch.denom(F))
        return loss, {"endpoint": mean_error}
