"""A data-free distribution-matching (DMD) term beside the sCM loss, as rCM adds to sCM.

rCM (NVlabs/rcm, "score-regularized continuous-time consistency") joins sCM's forward-divergence
objective with DMD's reverse divergence: a *fake score* network follows the student's own
samples, and the student is pushed along ``score_fake - score_real``, the teacher standing for
the real score.  Nothing in it needs data.  Per step, for ``samples`` pairs of the batch:

* the student's 1-step sample ``x0 = cos t x_t - sin t sigma_d F(x_t / sigma_d, t)`` at ``t =
  pi/2`` from fresh noise, with the pair's prompt and guidance ``w`` (TrigFlow units, ``[K, C, H, W]``);
* re-noised to ``s`` (radians) with fresh noise: ``x_s = cos s x0 + sin s sigma_d eps``,
  ``tau = sigmoid(N(t_mean, t_std))`` in flow time, ``s = atan(tau / (1 - tau))``;
* both scores as clean-sample predictions ``x0_hat = cos s x_s - sin s sigma_d F(x_s / sigma_d, s)``
  (:func:`tbcm.trigflow.consistency_fn`):
  the real one from the frozen teacher guided at ``w``, the fake one from the fake-score network
  (the student's architecture, starting as the teacher: its guidance input starts at zero);
* the generator loss ``mean((x0 - sg(x0 - grad))^2) / 2`` with ``grad = (x0_fake - x0_real) /
  mean|x0 - x0_real|`` per sample (DMD's normalisation), so ``dL/dx0 = grad / numel``;
* the fake-score loss: the flow-matching (TrigFlow ``F``) loss on the student's detached samples,
  ``mean((F_fake(x_s / sigma_d, s) - (cos s eps - sin s x0 / sigma_d))^2)``, the ``1 / sin^2 s``
  weighted clean-sample loss of rCM's critic.

The student's forward on the noise rides along the sCM gradient forward (one call, as the
adversarial term does); the teacher runs twice per sample (guided), the fake score
``critic_steps`` times with gradients (its first forward also gives the direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class DistributionMatchingConfig:
    weight: float = 0.0  # weight of the DMD generator loss beside the sCM loss; 0 = off
    samples: int = 8  # student 1-step samples per step (spread over the step's pairs)
    lr: float = 1e-4  # the fake-score network's AdamW learning rate
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    critic_steps: int = 1  # fake-score updates per student step (DMD2 and rCM use several)
    t_mean: float = 0.0  # re-noising: flow time tau = sigmoid(N(t_mean, t_std))
    t_std: float = 1.0
    start_step: int = 0  # the generator term joins after this many steps (the fake score trains from step 0)


def dmd_direction(x0: Tensor, x0_real: Tensor, x0_fake: Tensor) -> Tensor:
    """DMD's normalised gradient ``(x0_fake - x0_real) / mean|x0 - x0_real|`` per sample ``[K, ...]``
    (no gradient flows through it)."""
    with torch.no_grad():
        scale = (x0 - x0_real).abs().flatten(1).mean(1).clamp(min=1e-5)
        return (x0_fake - x0_real) / scale.view((-1,) + (1,) * (x0.dim() - 1))


def dmd_generator_loss(x0: Tensor, direction: Tensor) -> Tensor:
    """``mean((x0 - sg(x0 - direction))^2) / 2``: its gradient in ``x0`` is ``direction / x0.numel()``."""
    return 0.5 * ((x0 - (x0 - direction).detach()) ** 2).mean()


def fake_score_target(x0: Tensor, eps: Tensor, s: Tensor, sigma_d: float) -> Tensor:
    """The TrigFlow ``F`` of ``x_s = cos s x0 + sin s sigma_d eps``: ``(dx_s/ds) / sigma_d = cos s eps - sin s x0 / sigma_d``."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return torch.cos(s).view(shape) * eps - torch.sin(s).view(shape) * x0 / sigma_d
