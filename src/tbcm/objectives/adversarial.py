"""A data-free adversarial term (LADD without real images): the teacher's own final samples are
the "real" side.

Sana-Sprint adds LADD (latent adversarial diffusion distillation), whose real side is a dataset.
TBCM's rollouts already end in the teacher's samples ``x0`` for the prompts and guidance of
each step, so those stand in for data.  Per step, for ``samples`` pairs of the batch:

* real ``x0``: the final state of the pair's teacher trajectory (TrigFlow units, ``[K, C, H, W]``);
* fake: the student's 1-step sample from fresh noise for the same prompt and guidance,
  ``x0 = cos t x_t - sin t sigma_d F(x_t / sigma_d, t)`` at ``t = pi/2``;
* both re-noised to the same angle ``s`` with the same noise, ``x_s = cos s x0 + sin s sigma_d eps``,
  ``tau = sigmoid(N(t_mean, t_std))`` in flow time, ``s = atan(tau / (1 - tau))``;
* the discriminator: the **frozen teacher** run at ``(x_s / sigma_d, s, cond)``, the token
  features of a few of its blocks ``[K, N, D]`` read by forward hooks, and one small trainable
  head per block (LayerNorm, Linear, SiLU, Linear -> a logit per token, averaged over tokens);
* hinge losses: ``L_D = relu(1 - D(real)) + relu(1 + D(fake))`` for the heads,
  ``L_G = -D(fake)`` for the student (its gradient flows through the frozen teacher).

The student's fake-sample forward is batched into the sCM gradient forward (one call, so a DDP
wrapper sees one forward per backward).  Per step the teacher runs twice: once on the fakes (with
gradients to the student; the heads' step reuses those features detached) and once on the reals
(no gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from ..errors import UserError
from ..trigflow import angle_from_flow_time
from .terms import ExtraInputs, StepBatch, TermContext, TrainedTerm


@dataclass
class AdversarialConfig:
    weight: float = 0.0  # weight of the generator loss beside the sCM loss; 0 = off
    blocks: list[int] = field(default_factory=lambda: [-1])  # teacher blocks read (negative: from the end)
    lr: float = 1e-4  # the heads' AdamW learning rate
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    samples: int = 8  # real / fake samples per step (spread over the step's pairs)
    t_mean: float = 0.0  # re-noising: flow time tau = sigmoid(N(t_mean, t_std))
    t_std: float = 1.0
    start_step: int = 0  # the term joins after this many sCM-only steps

    def check(self, cfg, check) -> None:
        check(math.isfinite(self.weight) and self.weight >= 0, "objective.adversarial.weight", self.weight, ">= 0 (0 = off)")
        check(len(self.blocks) > 0, "objective.adversarial.blocks", self.blocks, "a non-empty list of teacher block indices")
        check(math.isfinite(self.lr) and self.lr > 0, "objective.adversarial.lr", self.lr, "a positive number")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "objective.adversarial.betas", self.betas,
              "two numbers in [0, 1)")
        check(self.samples >= 1, "objective.adversarial.samples", self.samples, "a positive integer")
        check(math.isfinite(self.t_std) and self.t_std > 0, "objective.adversarial.t_std", self.t_std, "a positive number")
        check(self.start_step >= 0, "objective.adversarial.start_step", self.start_step, ">= 0")
        check(self.weight == 0 or cfg.source == "trajectory", "objective.adversarial.weight", self.weight,
              "0 unless source=trajectory (the real side is the teacher's own final samples)")


def teacher_blocks(network: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a teacher network (``blocks`` of TinyDiT, ``transformer_blocks``
    of diffusers' Sana / FLUX / SD3 models)."""
    for name in ("blocks", "transformer_blocks"):
        blocks = getattr(network, name, None)
        if isinstance(blocks, nn.ModuleList) and len(blocks):
            return blocks
    raise ValueError(f"{type(network).__name__} has no `blocks` or `transformer_blocks` for the adversarial "
                     "heads: set objective.adversarial.weight=0")


class _Head(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def forward(self, tokens: Tensor) -> Tensor:  # [B, N, D] -> [B]
        return self.net(tokens.to(self.net[1].weight.dtype)).squeeze(-1).mean(1)


class TeacherDiscriminator(nn.Module):
    """``forward(x_norm [B,C,H,W], s [B] radians, cond) -> logits [B]``: heads on the frozen
    teacher's block features.  Only the heads are parameters of this module (the teacher is held
    by reference: it is neither trained nor saved with the heads)."""

    def __init__(self, teacher_F: nn.Module, blocks: list[int], probe: tuple[Tensor, Tensor, object]):
        super().__init__()
        self._teacher = [teacher_F]  # a list: not a registered submodule
        all_blocks = teacher_blocks(teacher_F.net)
        self.block_ids = sorted({b % len(all_blocks) for b in blocks})
        self._blocks = [all_blocks[i] for i in self.block_ids]
        with torch.no_grad():
            dims = [f.shape[-1] for f in self._features(*probe)]
        self.heads = nn.ModuleList(_Head(d) for d in dims)

    def _features(self, x_norm: Tensor, s: Tensor, cond) -> list[Tensor]:
        feats: list[Tensor] = []

        def keep(_module, _inputs, output):
            out = output[-1] if isinstance(output, tuple) else output
            feats.append(out if out.dim() == 3 else out.flatten(2).transpose(1, 2))

        hooks = [b.register_forward_hook(keep) for b in self._blocks]
        try:
            self._teacher[0](x_norm, s, cond)
        finally:
            for h in hooks:
                h.remove()
        return feats

    def features(self, x_norm: Tensor, s: Tensor, cond) -> list[Tensor]:
        """The teacher's token features ``[B, N, D]`` of each read block (one teacher forward)."""
        return self._features(x_norm, s, cond)

    def logits(self, feats: list[Tensor]) -> Tensor:
        """The heads on :meth:`features`: ``[B]``."""
        return sum(head(f) for head, f in zip(self.heads, feats)) / len(self.heads)

    def forward(self, x_norm: Tensor, s: Tensor, cond) -> Tensor:
        return self.logits(self.features(x_norm, s, cond))


def pick(n: int, k: int) -> Tensor:
    """``min(k, n)`` indices spread evenly over ``0..n-1`` (pairs of different trajectories)."""
    return torch.linspace(0, n - 1, min(k, n)).round().long()


def renoise_angles(k: int, cfg: AdversarialConfig, generator: torch.Generator) -> Tensor:
    """``[k]`` TrigFlow angles of the re-noising, from logit-normal flow times."""
    tau = torch.sigmoid(cfg.t_mean + cfg.t_std * torch.randn(k, generator=generator))
    return angle_from_flow_time(tau.clamp(1e-4, 1 - 1e-4))


def renoise(x0: Tensor, s: Tensor, eps: Tensor, sigma_d: float) -> Tensor:
    c, sn = torch.cos(s).view(-1, 1, 1, 1), torch.sin(s).view(-1, 1, 1, 1)
    return c * x0 + sn * sigma_d * eps


def one_step_sample(F: Tensor, noise: Tensor, sigma_d: float) -> Tensor:
    """The student's 1-step sample ``x0 = cos t x_t - sin t sigma_d F`` at ``t = pi/2``, ``x_t = sigma_d noise``."""
    return math.cos(math.pi / 2) * sigma_d * noise - math.sin(math.pi / 2) * sigma_d * F


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return Fn.relu(1 - real_logits).mean() + Fn.relu(1 + fake_logits).mean()


def fake_sample_inputs(batch: StepBatch, samples: int, ctx: TermContext, gen: torch.Generator) -> tuple[ExtraInputs, Tensor]:
    """``((noise [K,C,H,W], t = pi/2 [K], cond, w [K]), idx [K])``: inputs of the student's 1-step
    samples with the prompt and guidance of ``samples`` spread pairs (ridden along the gradient
    forward), and which pairs they are."""
    pairs, device = batch.pairs, ctx.device
    idx = pick(len(pairs), samples).to(device)
    noise = torch.randn((idx.numel(), *ctx.image_shape), generator=gen).to(device)
    t = torch.full((idx.numel(),), math.pi / 2, device=device)
    return (noise, t, pairs.cond.index(idx), pairs.w[idx]), idx


class AdversarialTerm(TrainedTerm):
    """The hinge generator loss of the student's 1-step samples against the heads on the frozen
    teacher; after the backward, the heads' own step on the detached features."""

    name = "adversarial"
    needs_trajectory_end = True
    in_loss_stat = False
    saved_as = "heads"
    seed_offset = 11

    def __init__(self, ctx: TermContext, cfg: AdversarialConfig):
        super().__init__(ctx, cfg.weight)
        self.cfg = cfg
        probe = (torch.zeros(1, *ctx.image_shape, device=ctx.device), torch.ones(1, device=ctx.device),
                 ctx.conds.index(torch.zeros(1, dtype=torch.long, device=ctx.device)))
        try:
            disc = TeacherDiscriminator(ctx.teacher.F, list(cfg.blocks), probe).to(ctx.device)
        except (ValueError, IndexError) as exc:
            raise UserError(f"objective.adversarial.blocks={list(cfg.blocks)}: {exc}") from None
        self.setup(disc, cfg.lr, cfg.betas)
        self._inputs = self._real = self._d_step = None

    def prepare(self, batch: StepBatch) -> ExtraInputs | None:
        self._d_step = None
        if batch.step < self.cfg.start_step:
            return None
        self._inputs, idx = fake_sample_inputs(batch, self.cfg.samples, self.ctx, self.generator)
        self._real = batch.pairs.x0[idx]
        return self._inputs

    def loss(self, batch: StepBatch, F: Tensor, logvar: Tensor, extra_F: Tensor | None) -> tuple[Tensor | None, dict]:
        zero = torch.zeros((), device=F.device)
        if extra_F is None:  # before start_step
            return None, {"adv_g": zero, "adv_d": zero}
        sd, disc, gen = self.ctx.sigma_d, self.module, self.generator
        fake, real, cond = one_step_sample(extra_F, self._inputs[0], sd), self._real, self._inputs[2]
        s = renoise_angles(fake.shape[0], self.cfg, gen).to(self.ctx.device)
        eps = torch.randn(fake.shape, generator=gen).to(self.ctx.device)  # the same noise for real and fake
        fake_feats = disc.features(renoise(fake, s, eps, sd) / sd, s, cond)
        g_loss = -disc.logits(fake_feats).mean()

        def d_step() -> Tensor:
            # the heads, on the fake's features detached (no second teacher forward on the fakes)
            self.optimizer.zero_grad(set_to_none=True)  # drop what the generator loss left on the heads
            with torch.no_grad():
                real_feats = disc.features(renoise(real, s, eps, sd) / sd, s, cond)
            d_loss = hinge_d_loss(disc.logits(real_feats), disc.logits([f.detach() for f in fake_feats]))
            d_loss.backward()
            self.average_gradients(disc.parameters())  # replicated heads
            self.optimizer.step()
            return d_loss.detach()

        self._d_step = d_step
        self._inputs = self._real = None
        return g_loss, {"adv_g": g_loss.detach(), "adv_d": zero}

    def after_backward(self) -> dict:
        if self._d_step is None:
            return {}
        out, self._d_step = {"adv_d": self._d_step()}, None
        return out
