"""The baselines TBCM replaces: forward-noised clean samples, one guided teacher call per pair.

* ``forward`` (sCM / Sana-Sprint): clean samples are real images through the encoder (identity
  for a pixel-space teacher like the built-in one; a VAE for latent teachers);
* ``teacher_x0`` (offline synthetic): clean samples are the teacher's own final samples, made
  once up front.

Per pair: ``sigma = exp(N(p_mean, p_std^2))``, ``t = atan(sigma / sigma_d)`` (the logit-normal
time of sCM), ``x_t = cos t x0 + sin t z`` with ``z ~ N(0, sigma_d^2)``, and the tangent is one
guided teacher call ``u = dx/dt`` at ``(x_t, t)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.condition import TextCondition
from ..trigflow import forward_noise
from ..sampling import teacher_sample
from .base import Pairs


@dataclass
class ForwardConfig:
    data: str = "digits"  # `forward`: real images ("digits", a folder or an .npz, as `tbcm teacher train`)
    prompt_template: str = "a handwritten digit {label}"
    p_mean: float = 0.2  # log-sigma mean (Sana-Sprint)
    p_std: float = 1.6  # log-sigma std
    pool_size: int = 512  # `teacher_x0`: teacher samples made up front
    pool_steps: int = 16  # ... with this many guided teacher steps each

    def check(self, cfg, check) -> None:
        check(self.p_std > 0, "forward.p_std", self.p_std, "a positive number")
        check(self.pool_size >= 1, "forward.pool_size", self.pool_size, "a positive integer")
        check(self.pool_steps >= 1, "forward.pool_steps", self.pool_steps, "a positive integer")
        check("{label}" in self.prompt_template, "forward.prompt_template", self.prompt_template,
              "a text containing {label}")


class ForwardNoisePairSource:
    """Pairs from forward-noised clean samples ``x0`` ``[N, C, H, W]`` (TrigFlow space).

    ``conds`` holds one condition per clean sample; ``pairs_per_prompt`` pairs are drawn per
    requested "prompt", so ``next_pairs(P)`` yields as many pairs as the trajectory source's
    ``P * (K - 1)`` and the two spend the same student compute per step.
    """

    def __init__(self, teacher, x0: Tensor, conds: TextCondition, cfg_scales: list[float], pairs_per_prompt: int,
                 config: ForwardConfig, generator: torch.Generator):
        if x0.shape[0] != len(conds):
            raise ValueError(f"{x0.shape[0]} clean samples but {len(conds)} conditions")
        self.teacher, self.x0, self.conds, self.config = teacher, x0, conds, config
        self.cfg_scales = torch.tensor(cfg_scales, dtype=torch.float32)
        self.pairs_per_prompt = pairs_per_prompt
        self.generator = generator
        self.teacher_calls = 0

    def sample_times(self, n: int) -> Tensor:
        """``[n]`` angles from the logit-normal: ``t = atan(exp(N(p_mean, p_std^2)) / sigma_d)``."""
        log_sigma = self.config.p_mean + self.config.p_std * torch.randn(n, generator=self.generator)
        return torch.atan(torch.exp(log_sigma) / self.teacher.sigma_d)

    @torch.no_grad()
    def next_pairs(self, num_prompts: int) -> Pairs:
        n = num_prompts * self.pairs_per_prompt
        idx = torch.randint(self.x0.shape[0], (n,), generator=self.generator)
        w = self.cfg_scales[torch.randint(len(self.cfg_scales), (n,), generator=self.generator)]
        t = self.sample_times(n)
        z = self.teacher.sigma_d * torch.randn((n, *self.x0.shape[1:]), generator=self.generator)
        device = self.conds.device
        x0 = self.x0[idx].to(device)
        x_t = forward_noise(x0, t.to(device), z.to(device))
        cond = self.conds.index(idx.to(device))
        u = self.teacher.velocity(x_t, t.to(device), cond, w.to(device))
        self.teacher_calls += n
        return Pairs(x_t, t.to(device), u, cond, w.to(device), torch.ones(n, device=device), idx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "teacher_calls": torch.tensor(self.teacher_calls)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.teacher_calls = int(state["teacher_calls"])


@torch.no_grad()
def teacher_pool(teacher, conds: TextCondition, cfg_scales: list[float], image_shape: tuple[int, ...],
                 config: ForwardConfig, seed: int, batch: int = 256) -> tuple[Tensor, TextCondition, int]:
    """The teacher's own final samples for ``teacher_x0``: ``pool_size`` samples cycling over the
    prompts, each with a CFG scale from ``cfg_scales``. Returns ``(x0 [N,C,H,W], conds [N], calls)``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.arange(config.pool_size) % len(conds)
    scales = torch.tensor(cfg_scales, dtype=torch.float32)
    out = []
    for start in range(0, config.pool_size, batch):
        chunk = ids[start:start + batch]
        w = scales[torch.randint(len(scales), (len(chunk),), generator=gen)]
        noise = torch.randn((len(chunk), *image_shape), generator=gen)
        device = conds.device
        out.append(teacher_sample(teacher, conds.index(chunk.to(device)), w.to(device), noise.to(device),
                                  steps=config.pool_steps).cpu())
    return torch.cat(out), conds.index(ids.to(conds.device)), config.pool_size * config.pool_steps
