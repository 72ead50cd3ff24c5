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

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.lora import copy_network
from ..models.student import Student
from ..trigflow import consistency_fn, forward_noise
from .adversarial import fake_sample_inputs, one_step_sample, renoise_angles
from .terms import ExtraInputs, StepBatch, TermContext, TrainedTerm


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

    def check(self, cfg, check) -> None:
        name = "objective.distribution_matching"
        check(math.isfinite(self.weight) and self.weight >= 0, f"{name}.weight", self.weight, ">= 0 (0 = off)")
        check(self.samples >= 1, f"{name}.samples", self.samples, "a positive integer")
        check(math.isfinite(self.lr) and self.lr > 0, f"{name}.lr", self.lr, "a positive number")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{name}.betas", self.betas,
              "two numbers in [0, 1)")
        check(self.critic_steps >= 1, f"{name}.critic_steps", self.critic_steps, "a positive integer")
        check(math.isfinite(self.t_std) and self.t_std > 0, f"{name}.t_std", self.t_std, "a positive number")
        check(self.start_step >= 0, f"{name}.start_step", self.start_step, ">= 0")


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


class DistributionMatchingTerm(TrainedTerm):
    """rCM's score regulariser: the DMD generator loss of the student's 1-step samples, and after
    the backward the fake score's own flow-matching steps on the detached samples."""

    name = "distribution_matching"
    in_loss_stat = False
    saved_as = "fake"
    seed_offset = 13

    def __init__(self, ctx: TermContext, cfg: DistributionMatchingConfig):
        super().__init__(ctx, cfg.weight)
        self.cfg = cfg
        # a Student module for its (x_norm, t, cond, w) call; only its F network trains (a LoRA
        # student's fake score is LoRA too, on the same shared base)
        fake = Student(copy_network(ctx.student_template), ctx.sigma_d, ctx.timestep_scale).to(ctx.device)
        self.setup(fake.train(), cfg.lr, cfg.betas, params=fake.F.parameters())
        self._inputs = self._critic_step = None

    def prepare(self, batch: StepBatch) -> ExtraInputs:
        # the fake score follows the student from step 0; the generator term joins at start_step
        self._inputs, _ = fake_sample_inputs(batch, self.cfg.samples, self.ctx, self.generator)
        return self._inputs

    def loss(self, batch: StepBatch, F: Tensor, logvar: Tensor, extra_F: Tensor) -> tuple[Tensor | None, dict]:
        g_loss, self._critic_step = self.generator_loss(self._inputs, extra_F)
        self._inputs = None
        return (g_loss if batch.step >= self.cfg.start_step else None), {"dmd_g": g_loss.detach()}

    def generator_loss(self, inputs: ExtraInputs, F_noise: Tensor) -> tuple[Tensor, callable]:
        """``(DMD generator loss, critic_step)`` of the student's 1-step samples from ``inputs``
        (noise ``[K,C,H,W]`` at pi/2, cond, w ``[K]``) given its F there ``[K,C,H,W]`` (with
        gradients); ``critic_step()`` then trains the fake score on the detached samples."""
        m, sd, net, gen, device = self.cfg, self.ctx.sigma_d, self.module, self.generator, self.ctx.device
        fake = one_step_sample(F_noise, inputs[0], sd)
        cond, w = inputs[2], inputs[3]
        x0 = fake.detach()

        def noised():
            s = renoise_angles(x0.shape[0], m, gen).to(device)
            eps = torch.randn(x0.shape, generator=gen).to(device)
            return s, eps, forward_noise(x0, s, sd * eps)

        s, eps, x_s = noised()
        # one fake-score forward (with grad) serves the direction (detached) and the first critic update
        F_fake = net(x_s / sd, s, cond, w)
        x0_real = consistency_fn(x_s, s, self.ctx.teacher.velocity(x_s, s, cond, w) / sd, sd)
        x0_fake = consistency_fn(x_s, s, F_fake.detach(), sd)
        g_loss = dmd_generator_loss(fake, dmd_direction(x0, x0_real, x0_fake))

        def critic_step() -> Tensor:
            total = torch.zeros((), device=device)
            for i in range(m.critic_steps):
                if i == 0:
                    F_i, s_i, eps_i = F_fake, s, eps
                else:
                    s_i, eps_i, x_i = noised()
                    F_i = net(x_i / sd, s_i, cond, w)
                self.optimizer.zero_grad(set_to_none=True)
                loss = ((F_i - fake_score_target(x0, eps_i, s_i, sd)) ** 2).mean()
                loss.backward()
                self.average_gradients(net.F.parameters())
                self.optimizer.step()
                total = total + loss.detach()
            return total / m.critic_steps

        return g_loss, critic_step

    def after_backward(self) -> dict:
        out, self._critic_step = {"dmd_fake": self._critic_step()}, None
        return out
