"""TBCM's pair source: the teacher's own guided sampling trajectory (no images, no VAE).

Per prompt: draw a CFG scale, draw a jittered route of K angles (the first is pi/2), roll the
teacher out without gradients from pure noise, keep the K - 1 intermediate states after the
pure-noise point with their angles (all K with ``noise_point``), and reuse the teacher velocity
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
from ..trigflow import forward_noise, training_route
from .base import Pairs
from .prompts import PromptSampler


@dataclass
class TrajectoryConfig:
    route_points: int = 16  # K: points of the route, pure-noise point included
    shift: float = 2.5
    # "official" (hustvl/TBCM: reference to 0.0063 rad, the shift applied twice, point j drawn in
    # (ref[j], ref[j-1]), so angles cover (0.0063, pi/2)) or "tbcm_v1" (tbcm's first: one shift,
    # point i drawn in (ref[i+1], ref[i]], angles in (0, 1.544] -- the interval next to pi/2 untrained)
    route: str = "official"
    jitter: bool = True
    blank_threshold: float = 0.0  # flow-space MSE to a blank image under which pairs may drop; 0 = off
    points_per_trajectory: int = 0  # keep this many random points of the K - 1 per trajectory; 0 = all
    # Extra pairs per trajectory from its own final sample, forward-noised to a route angle (the
    # states a multi-step sampler feeds the student), each with one more guided teacher call; 0 = off.
    renoised_points: int = 0
    # Only route points at or below this angle (radians) are re-noised, where the few-step sampler
    # re-noises to (the default's 2- and 4-step routes stop at 0.02-0.34 rad). A trajectory with no
    # point this low re-noises at its lowest point. pi/2 = every point after pure noise (the first
    # version, whose draws it keeps). Measured on the digits at 0.4: worse at 1 step than every
    # point (docs/results.md, "Explicit few-step routes"), so the guess behind it -- high re-noised
    # states pin the endpoint term to a blur -- is wrong.
    renoised_max_angle: float = math.pi / 2
    # Also keep each trajectory's pure-noise point (t = pi/2, the 1-step sampler's own input) as a
    # pair. The sCM loss's weight is exactly zero there (the cos t of its tangent, the 1 / tan t of
    # the prior weight), so the pair carries only the endpoint term (objective.endpoint_weight):
    # f(sigma_d eps, pi/2) = x0, the 1-step map pinned to the teacher's own ODE map. No teacher call.
    noise_point: bool = False
    # A trajectory pool (tbcm.pairs.pool): roll out this many prompts at once and serve each step's
    # pairs drawn from all of them; 0 = off (each step rolls out its own prompts_per_step prompts).
    # 64 measured best on the embedded default, mostly at 2 and 4 steps (docs/results.md, recipe)
    pool_prompts: int = 64
    pool_reuse: int = 1  # times each pooled pair is served
    # The teacher forward of the rollout (tbcm.pairs.rollout_teacher): "fp32", or "bf16" (autocast;
    # float32 fallback with a warning where unavailable); and torch.compile of it (eager fallback).
    rollout_dtype: str = "fp32"
    rollout_compile: bool = False


class TrajectoryPairSource:
    """``sample(prompt_ids) -> Pairs`` with ``len(prompt_ids) * (K - 1)`` pairs (``* K`` with ``noise_point``).

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
        self.keep_final = False  # attach each pair's trajectory end x0 (the adversarial term sets it)
        self.reference, self._jitter = training_route(config.route, config.route_points, config.shift)
        self.teacher_calls = 0  # guided teacher evaluations so far (each = one cond + one null pass)

    def routes(self, batch: int) -> Tensor:
        """``[batch, K]`` angles (float64): jittered per prompt, or the fixed reference route."""
        if self.config.jitter:
            return self._jitter(self.reference, self.generator, batch)
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
        # Drop the pure-noise point unless asked for; order pairs prompt-major: [P, n] -> [P * n].
        first = 0 if self.config.noise_point else 1
        n = k - first
        x_t = traj.states[first:].transpose(0, 1).reshape(p * n, *self.image_shape)
        u = traj.velocities[first:].transpose(0, 1).reshape(p * n, *self.image_shape)
        pairs = Pairs(
            x_t=x_t,
            t=route[:, first:].reshape(-1),
            u=u,
            cond=cond.repeat_interleave(n),
            w=w.repeat_interleave(n),
            mask=keep.to(device).repeat_interleave(n),
            prompt_ids=prompt_ids.repeat_interleave(n),
            x0=traj.final.repeat_interleave(n, 0) if self.keep_final else None,
        )
        m = self.config.points_per_trajectory
        if 0 < m < n:  # ablation: a random subset of each trajectory's points
            pick = torch.rand(p, n, generator=self.generator).argsort(dim=1)[:, :m].sort(dim=1).values
            idx = (pick + torch.arange(p)[:, None] * n).reshape(-1).to(x_t.device)
            pairs = Pairs(pairs.x_t[idx], pairs.t[idx], pairs.u[idx], pairs.cond.index(idx), pairs.w[idx],
                          pairs.mask[idx], pairs.prompt_ids[idx.cpu()], None if pairs.x0 is None else pairs.x0[idx])
        if self.config.renoised_points > 0:
            pairs = _concat(pairs, self.renoised_pairs(traj.final, route, cond, w, keep.to(device), prompt_ids))
        return pairs

    def renoised_pairs(self, final: Tensor, route: Tensor, cond: TextCondition, w: Tensor, keep: Tensor,
                       prompt_ids: Tensor) -> Pairs:
        """``renoised_points`` pairs per trajectory: its final sample ``x0`` ``[P, C, H, W]`` forward-noised,
        ``x_t = cos t x0 + sin t sigma_d eps``, at angles drawn from the trajectory's own route points
        after pi/2 (those at or below ``renoised_max_angle``), with the guided teacher velocity at ``x_t`` as the tangent (one batched call)."""
        p, m, device = final.shape[0], self.config.renoised_points, final.device
        k = route.shape[1]
        if self.config.renoised_max_angle >= math.pi / 2:  # every point after pi/2 (the first version's draws)
            pick = torch.randint(1, k, (p, m), generator=self.generator).to(device)
        else:  # the route decreases: its points at or below the angle are a suffix, at least the last point
            first = ((route[:, 1:] > self.config.renoised_max_angle).sum(1) + 1).clamp(max=k - 1).cpu()
            u = torch.rand((p, m), generator=self.generator)
            pick = (first[:, None] + (u * (k - first)[:, None]).long().clamp(max=k - 1 - first[:, None])).to(device)
        t = route.gather(1, pick).reshape(-1)  # [P * m], prompt-major
        eps = torch.randn((p * m, *self.image_shape), generator=self.generator).to(device)
        x0 = final.repeat_interleave(m, 0)
        x_t = forward_noise(x0, t, self.teacher.sigma_d * eps)
        cond_m, w_m = cond.repeat_interleave(m), w.repeat_interleave(m)
        u = self.teacher.velocity(x_t, t, cond_m, w_m)
        self.teacher_calls += p * m
        return Pairs(x_t=x_t, t=t, u=u, cond=cond_m, w=w_m, mask=keep.repeat_interleave(m),
                     prompt_ids=prompt_ids.repeat_interleave(m), x0=x0 if self.keep_final else None)


def _concat(a: Pairs, b: Pairs) -> Pairs:
    x0 = None if a.x0 is None or b.x0 is None else torch.cat([a.x0, b.x0])
    return Pairs(torch.cat([a.x_t, b.x_t]), torch.cat([a.t, b.t]), torch.cat([a.u, b.u]), TextCondition.cat([a.cond, b.cond]),
                 torch.cat([a.w, b.w]), torch.cat([a.mask, b.mask]), torch.cat([a.prompt_ids, b.prompt_ids]), x0)
