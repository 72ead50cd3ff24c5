"""TBCM's pair source: the teacher's own guided sampling trajectory (no images, no VAE).

Per prompt: draw a CFG scale, draw a jittered route of K angles (the first is pi/2), roll the
teacher out without gradients from pure noise, keep the K - 1 intermediate states after the
pure-noise point with their angles, and reuse the teacher velocity
at each state as the tangent ``dx/dt`` -- the rollout already computed it, so the pairs cost no
extra teacher call.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.condition import TextCondition
from ..sampling import rollout
from ..trigflow import jitter_route_official, official_reference_route
from .base import Pairs
from .prompts import PromptSampler


@dataclass
class TrajectoryConfig:
    route_points: int = 16  # K: points of the route, pure-noise point included
    shift: float = 2.5  # the reference route's shift (hustvl/TBCM applies it twice: trigflow.official_reference_route)
    jitter: bool = True  # stratified jitter of each route point in the interval above it (hustvl/TBCM)
    blank_threshold: float = 0.0  # flow-space MSE to a blank image under which pairs may drop; 0 = off
    # A trajectory pool (tbcm.pairs.pool): roll out this many prompts at once and serve each step's
    # pairs drawn from all of them; 0 = off (each step rolls out its own prompts_per_step prompts).
    # 64 measured best on the embedded default, mostly at 2 and 4 steps (docs/results.md, recipe)
    pool_prompts: int = 64
    pool_reuse: int = 1  # times each pooled pair is served
    # The teacher forward of the rollout (tbcm.pairs.rollout_teacher): "fp32", or "bf16" (autocast;
    # float32 fallback with a warning where unavailable); and torch.compile of it (eager fallback).
    rollout_dtype: str = "fp32"
    rollout_compile: bool = False

    def check(self, cfg, check) -> None:
        from .rollout_teacher import ROLLOUT_DTYPES

        check(self.route_points >= 2, "pairs.route_points", self.route_points, "at least 2")
        check(math.isfinite(self.shift) and self.shift > 0, "pairs.shift", self.shift, "a positive number")
        check(self.pool_prompts >= 0, "pairs.pool_prompts", self.pool_prompts, ">= 0 (0 = off)")
        check(self.pool_reuse >= 1, "pairs.pool_reuse", self.pool_reuse, "a positive integer")
        check(self.rollout_dtype in ROLLOUT_DTYPES, "pairs.rollout_dtype", self.rollout_dtype,
              f"one of {', '.join(ROLLOUT_DTYPES)}")
        check(cfg.source == "trajectory" or (self.rollout_dtype == "fp32" and not self.rollout_compile),
              "pairs.rollout_dtype/rollout_compile", f"{self.rollout_dtype}/{self.rollout_compile}",
              f"fp32/false with source={cfg.source} (they apply to the online trajectory rollout only)")
        check(self.blank_threshold >= 0, "pairs.blank_threshold", self.blank_threshold, ">= 0 (0 = off)")


class TrajectoryPairSource:
    """``sample(prompt_ids) -> Pairs`` with ``len(prompt_ids) * (K - 1)`` pairs.

    ``teacher`` has ``velocity(x_t, t, cond, w)`` and ``sigma_d``; ``conds`` are the encoded
    prompts (batch = number of prompts); ``cfg_scales`` the set each prompt's ``w`` is drawn from;
    ``image_shape`` ``(C, H, W)``; ``blank_value`` the flow-space value of a blank image (a number,
    or a ``[C, H, W]`` latent: a latent teacher's VAE encoding of a black image);
    ``generator`` drives noise, routes, CFG scales and the filter (one seed per rank);
    ``prompts`` picks the prompts of :meth:`next_pairs` (default: shuffled passes, seed 0).
    """

    def __init__(self, teacher, conds: TextCondition, cfg_scales: list[float], image_shape: tuple[int, ...],
                 config: TrajectoryConfig, blank_value: float | Tensor = -1.0, generator: torch.Generator | None = None,
                 prompts: PromptSampler | None = None):
        self.teacher, self.conds, self.config = teacher, conds, config
        self.prompts = prompts if prompts is not None else PromptSampler(len(conds), seed=0)
        self.cfg_scales = torch.tensor(cfg_scales, dtype=torch.float32)
        self.image_shape = tuple(image_shape)
        self.blank_value = blank_value
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.keep_final = False  # attach each pair's trajectory end x0 (a loss term that needs it sets it)
        self.reference = official_reference_route(config.route_points, config.shift)
        self.teacher_calls = 0  # guided teacher evaluations so far (each = one cond + one null pass)

    def routes(self, batch: int) -> Tensor:
        """``[batch, K]`` angles (float64): jittered per prompt, or the fixed reference route."""
        if self.config.jitter:
            return jitter_route_official(self.reference, self.generator, batch)
        return self.reference.expand(batch, -1).clone()

    def keep_mask(self, final_x0: Tensor) -> Tensor:
        """Degenerate filter ``[P]``: a sample whose flow-space MSE to a blank image is below the
        threshold is dropped with probability ``1 - MSE / threshold``."""
        thr = self.config.blank_threshold
        if thr <= 0:
            return torch.ones(final_x0.shape[0])
        flow = final_x0.float().cpu() / self.teacher.sigma_d
        mse = (flow - self.blank_value).pow(2).flatten(1).mean(1)
        drop_p = (1 - mse / thr).clamp(min=0)
        return (torch.rand(mse.shape, generator=self.generator) >= drop_p).float()

    def next_pairs(self, num_prompts: int) -> Pairs:
        return self.sample(self.prompts.next_ids(num_prompts))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "prompts": self.prompts.state_dict(),
                "teacher_calls": torch.tensor(self.teacher_calls)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.prompts.load_state_dict(state["prompts"])
        self.teacher_calls = int(state["teacher_calls"])

    @torch.no_grad()
    def sample(self, prompt_ids: Tensor) -> Pairs:
        p, k = prompt_ids.shape[0], self.config.route_points
        device = self.conds.device  # the teacher's device; random draws stay on the CPU generator
        cond = self.conds.index(prompt_ids.to(device))
        w = self.cfg_scales[torch.randint(len(self.cfg_scales), (p,), generator=self.generator)].to(device)
        route = self.routes(p).float().to(device)
        noise = torch.randn((p, *self.image_shape), generator=self.generator).to(device)
        traj = rollout(lambda x, t: self.teacher.velocity(x, t, cond, w), self.teacher.sigma_d * noise, route)
        self.teacher_calls += k * p
        keep = self.keep_mask(traj.final)
        # drop the pure-noise point; order pairs prompt-major: [P, K - 1] -> [P * (K - 1)]
        n = k - 1
        x_t = traj.states[1:].transpose(0, 1).reshape(p * n, *self.image_shape)
        u = traj.velocities[1:].transpose(0, 1).reshape(p * n, *self.image_shape)
        return Pairs(
            x_t=x_t,
            t=route[:, 1:].reshape(-1),
            u=u,
            cond=cond.repeat_interleave(n),
            w=w.repeat_interleave(n),
            mask=keep.to(device).repeat_interleave(n),
            prompt_ids=prompt_ids.repeat_interleave(n),
            x0=traj.final.repeat_interleave(n, 0) if self.keep_final else None,
        )
