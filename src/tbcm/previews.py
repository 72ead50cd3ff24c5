"""Seeded sample sets: the teacher (many steps, guided) beside the student (few steps), same prompts
and same initial noise, so they compare like with like. Grids share each column's noise across
prompts; evaluation sets (``independent=True``) give every image its own seed."""

from __future__ import annotations

import torch

from .models.builtin.text import PromptEncoder
from .sampler import StudentSampler
from .sampling import teacher_sample, to_pixels


def seeded_noise(seeds: int, rows: int, shape: tuple[int, ...], first_seed: int = 0) -> torch.Tensor:
    """Standard-normal noise ``[rows * seeds, *shape]``; column ``j`` uses seed ``first_seed + j``
    in every row."""
    cols = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(first_seed + j))
                        for j in range(seeds)])
    return cols.repeat(rows, *([1] * len(shape)))


def image_generators(rows: int, seeds: int, first_seed: int = 0) -> list[torch.Generator]:
    """One generator per image of a ``[rows * seeds]`` set, row-major: image ``j`` of row ``r``
    seeded ``first_seed + r * seeds + j``. Each draws its image's initial noise and then, for a
    few-step student, its re-noising -- as ``tbcm sample --seed`` does for one image -- so every
    image is independent of the others and of how a set is split into batches."""
    return [torch.Generator().manual_seed(first_seed + i) for i in range(rows * seeds)]


def independent_noise(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """``[len(gens), *shape]`` standard normal, image ``i`` from ``gens[i]`` (advancing it)."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def _shape(network) -> tuple[int, int, int]:
    c = network.config
    return (c.in_channels, c.image_size, c.image_size)


def _device(model) -> torch.device:
    """Where the network runs (prompt encoders may return CPU tensors, e.g. from their disk cache)."""
    return next(model.parameters()).device


def _pixels(x0: torch.Tensor, sigma_d: float, decode) -> torch.Tensor:
    return to_pixels(x0, sigma_d) if decode is None else decode(x0)


def teacher_samples(teacher, prompts: list[str], cfg_scale: float, steps: int, seeds: int,
                    shift: float = 2.5, first_seed: int = 0, decode=None, independent: bool = False) -> torch.Tensor:
    """Pixels ``[len(prompts) * seeds, C, H, W]`` in ``[-1, 1]``; row-major (prompt, seed).

    ``decode`` maps TrigFlow-space latents to pixels (a latent teacher's VAE); ``None``: pixel space.
    Noise: column ``j`` shares seed ``first_seed + j`` across prompts (grids: rows compare on the
    same noise), or with ``independent`` each image its own (:func:`image_generators`: independent
    samples, as a distribution metric assumes)."""
    device = _device(teacher.F)  # the noise is drawn on the CPU (the same on any device)
    cond = teacher.encoder.encode(prompts).to(device).repeat_interleave(seeds)
    if independent:
        noise = independent_noise(image_generators(len(prompts), seeds, first_seed), _shape(teacher.F.net)).to(device)
    else:
        noise = seeded_noise(seeds, len(prompts), _shape(teacher.F.net), first_seed).to(device)
    w = torch.full((noise.shape[0],), float(cfg_scale), device=device)
    return _pixels(teacher_sample(teacher, cond, w, noise, steps=steps, shift=shift), teacher.sigma_d, decode)


def student_samples(student, encoder: PromptEncoder, prompts: list[str], sampler: StudentSampler, steps: int,
                    seeds: int, first_seed: int = 0, decode=None, independent: bool = False) -> torch.Tensor:
    """Pixels ``[len(prompts) * seeds, C, H, W]`` in ``[-1, 1]`` from ``sampler`` run for ``steps``
    student calls (its guidance input, angles in radians and re-noising:
    :meth:`tbcm.sampler.StudentSampler.sample`); row-major (prompt, seed).

    Noise as :func:`teacher_samples`: column ``j`` shares seed ``first_seed + j`` across prompts
    (the re-noising of later steps from one generator seeded ``first_seed + 10000``), or with
    ``independent`` each image its own generator for its initial noise and its re-noising (the
    same initial noise as the teacher's independent set). ``decode`` as :func:`teacher_samples`.
    """
    device = _device(student)
    cond = encoder.encode(prompts).to(device).repeat_interleave(seeds)
    if independent:
        gen = image_generators(len(prompts), seeds, first_seed)
        noise = independent_noise(gen, _shape(student.network)).to(device)
    else:
        noise = seeded_noise(seeds, len(prompts), _shape(student.network), first_seed).to(device)
        gen = torch.Generator().manual_seed(first_seed + 10_000)  # noise of the later steps
    return _pixels(sampler.sample(student, cond, noise, steps, generator=gen), student.sigma_d, decode)
