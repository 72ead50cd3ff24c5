"""Seeded image sets for evaluation: the student through its :class:`~tbcm.sampler.StudentSampler`,
the teacher as a first-order TrigFlow rollout on a route, every image from its own seed.

An :class:`ImageDraw` is ``n`` images for each of ``prompts``, row-major: image ``k = i n + j``
(image ``j`` of prompt ``i``) is seeded ``seed + k``. That generator draws the image's initial noise
and then, for a few-step student, its re-noising (as ``tbcm sample --seed`` does), so teacher and
student start from the same noise, every image is independent of the others, and no number depends
on how a set is cut into batches.

All samples are TrigFlow-space ``x0`` (``= sigma_d * x0_flow``); angles are TrigFlow radians
(``pi/2`` = pure noise, 0 = the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..sampling import rollout
from ..trigflow import official_reference_route

# (cond [B], noise [B, C, H, W] standard normal, generators [B]) -> x0 [B, C, H, W]
SampleFn = Callable[[object, Tensor, list], Tensor]


@dataclass(frozen=True)
class ImageDraw:
    """``n`` images per prompt of ``prompts``, image ``k = i n + j`` seeded ``seed + k``."""

    prompts: tuple[str, ...]
    n: int
    seed: int

    def __len__(self) -> int:
        return len(self.prompts) * self.n

    def prompt_index(self, start: int, stop: int) -> Tensor:
        """``[stop - start]`` long: the prompt of each image in ``start:stop``."""
        return torch.arange(start, stop) // self.n

    def generators(self, start: int, stop: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(self.seed + k) for k in range(start, stop)]


def teacher_route(points: int, shift: float) -> Tensor:
    """``[points]`` float64 angles of the teacher's route: hustvl/TBCM's reference route
    (:func:`tbcm.trigflow.official_reference_route`, no jitter), ``[pi/2]`` for one point. A
    rollout runs through them and then to 0: ``points`` guided teacher calls."""
    if points == 1:
        return torch.tensor([math.pi / 2], dtype=torch.float64)
    return official_reference_route(int(points), float(shift))


def teacher_fn(teacher, route: Tensor, cfg: float, interval: list[float] | tuple | None) -> SampleFn:
    """The teacher's PF-ODE solve from ``sigma_d * noise`` through ``route`` ``[K]`` (radians) to 0
    (:func:`tbcm.sampling.rollout`, first order), guided with scale ``cfg`` inside ``interval``
    ``(lo, hi]`` (radians; empty or ``None``: at every angle) and conditional elsewhere. Guidance 1
    is the conditional teacher: it runs without the unconditional pass (half the calls)."""
    interval = tuple(interval) if interval else None
    if float(cfg) == 1.0:  # guided by 1 nowhere: interval_guided_F skips the null half of the batch
        interval = (0.0, math.pi / 2)

    def sample(cond, noise: Tensor, gens) -> Tensor:
        before = teacher.guidance_interval
        teacher.guidance_interval = interval
        try:
            r = route.to(device=noise.device, dtype=noise.dtype).expand(noise.shape[0], -1)
            w = torch.full((noise.shape[0],), float(cfg), device=noise.device)
            return rollout(lambda x, t: teacher.velocity(x, t, cond, w), teacher.sigma_d * noise, r).final
        finally:
            teacher.guidance_interval = before

    return sample


def student_fn(student, sampler, steps: int, cfg: float | None = None) -> SampleFn:
    """The student's ``steps``-step sampler (:meth:`tbcm.sampler.StudentSampler.sample`) at guidance
    input ``cfg`` (default: the sampler's), its re-noising drawn from each image's own generator."""

    def sample(cond, noise: Tensor, gens) -> Tensor:
        return sampler.sample(student, cond, noise, steps, generator=gens, w=cfg)

    return sample


class Encodings:
    """The prompts of a draw encoded once per encoder (``encoder.encode(prompts)``), indexed per batch."""

    def __init__(self, prompts, encoder):
        self.cond = encoder.encode(list(prompts))

    def batch(self, index: Tensor, device) -> object:
        return self.cond.index(index.to(self.cond.device)).to(device)


@torch.no_grad()
def sample_draw(draw: ImageDraw, fn: SampleFn, encodings: Encodings, shape: tuple[int, int, int],
                device: torch.device | str = "cpu", batch: int = 128, bar=None) -> Tensor:
    """``x0`` ``[len(draw), C, H, W]`` (float32, on the CPU) of ``fn`` on every image of ``draw``,
    ``batch`` images a call; ``bar`` (a tqdm bar) advances by the images done."""
    out = []
    for start in range(0, len(draw), batch):
        stop = min(start + batch, len(draw))
        gens = draw.generators(start, stop)
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
        x0 = fn(encodings.batch(draw.prompt_index(start, stop), device), noise, gens)
        out.append(x0.float().cpu())
        if bar is not None:
            bar.update(stop - start)
    return torch.cat(out)
