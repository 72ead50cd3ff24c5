"""Images from a distilled student of any family: what ``tbcm eval --reference`` generates with.

    gen = load_image_generator(Path("runs/default/student"), steps=1)
    images = gen.generate(["a handwritten digit 3", "a handwritten digit 7"], seeds=[0, 1])
    images.shape  # uint8 [2, 3, gen.resolution, gen.resolution], on the CPU

Image ``i`` depends only on its prompt and its seed ``seeds[i]`` (all of its noise, the initial
noise and that of later sampling steps, comes from a generator seeded with it), so the same
prompts and seeds give the same images on a rerun. Every family samples the same way
(:func:`tbcm.sampling.student_sample`); latent students (Sana, FLUX) decode with the teacher's VAE.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor


def to_uint8_rgb(pixels: Tensor) -> Tensor:
    """Flow-space pixels ``[B, C, H, W]`` in ``[-1, 1]`` (C = 1 or 3) to uint8 RGB ``[B, 3, H, W]``
    (grayscale repeated to three channels)."""
    out = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


class ImageGenerator:
    """The few-step sampler of a student folder: a TinyDiT in pixel space (grayscale students give
    gray RGB images), or a diffusers student in latent space whose ``bundle.decode`` (the teacher's
    VAE) makes the pixels. ``steps`` is the default step count of :meth:`generate`; ``sampler`` (a
    :class:`tbcm.sampler.StudentSampler`) its guidance input, angles and re-noising."""

    def __init__(self, bundle, steps: int, cfg_scale: float | None, shift: float | None,
                 device: str | torch.device | None = None, fresh_noise: float | None = None,
                 routes: dict | None = None):
        from .models.student import Student
        from .sampler import StudentSampler

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.family = bundle.meta.family
        # the student's own sampler, with the given settings replaced (a shift alone drops its saved routes)
        self.sampler = StudentSampler.from_extra(bundle.meta.extra).overridden(
            cfg_scale=cfg_scale, shift=shift, fresh_noise=fresh_noise, routes=routes)
        self.steps = int(steps)
        self.student = Student.from_bundle(bundle).eval().to(self.device)
        self.encoder = bundle.encoder.eval().to(self.device)
        self.shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
        self.decode = bundle.decode
        # pixel students: the sample size; latent students: what the VAE makes of one latent
        self.resolution = self.shape[-1] if self.decode is None else \
            int(self.decode(torch.zeros(1, *self.shape, device=self.device)).shape[-1])

    @property
    def cfg_scale(self) -> float:
        """The guidance input ``w`` every image is sampled with."""
        return self.sampler.cfg_scale

    @property
    def shift(self) -> float:
        """The route shift of step counts without an explicit route (2-step middle angle ``arctan(shift)`` rad)."""
        return self.sampler.shift

    @property
    def fresh_noise(self) -> float:
        """The re-noising share (1 = fresh noise)."""
        return self.sampler.fresh_noise

    @property
    def routes(self) -> dict[int, list[float]]:
        """Explicit routes ``{steps: middle angles in rad}``."""
        return self.sampler.routes

    def check_prompts(self, prompts: list[str]) -> None:
        if hasattr(self.encoder, "token_ids"):  # the word-level encoder knows a closed vocabulary
            self.encoder.token_ids(prompts)  # PromptError (a UserError) names the unknown word

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None) -> Tensor:
        """uint8 RGB ``[len(prompts), 3, resolution, resolution]`` on the CPU; image ``i`` from
        ``prompts[i]`` and ``seeds[i]``, with ``steps`` sampling steps (default: the generator's)."""
        from .previews import independent_noise
        from .sampling import to_pixels

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        noise = independent_noise(gens, self.shape).to(self.device)
        cond = self.encoder.encode(prompts).to(self.device)  # cached encodings come back on the CPU
        x0 = self.sampler.sample(self.student, cond, noise, steps or self.steps, generator=gens)
        pixels = to_pixels(x0, self.student.sigma_d) if self.decode is None else self.decode(x0)
        return to_uint8_rgb(pixels).cpu()


def load_image_generator(student_dir: str | os.PathLike, steps: int, cfg_scale: float | None = None,
                         shift: float | None = None, device: str | torch.device | None = None,
                         fresh_noise: float | None = None, routes: dict | None = None) -> ImageGenerator:
    """The generator of the student in ``student_dir`` (any family): its saved sampler
    (:meth:`tbcm.sampler.StudentSampler.from_extra`) with the settings given here replaced
    (:meth:`~tbcm.sampler.StudentSampler.overridden`: ``cfg_scale`` the guidance input, ``shift`` the
    route shift -- alone it drops the saved explicit routes --, ``fresh_noise`` the re-noising share,
    ``routes`` ``{steps: middle angles in rad}``, ``{}`` for none; ``None``: the student's own).
    Raises :class:`UserError`. Prompt encodings are not cached on disk: an evaluation's prompts are used once."""
    from .errors import UserError
    from .models.bundle import load_bundle

    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps})")
    return ImageGenerator(load_bundle(Path(student_dir), expect_kind="student", text_cache=None), steps, cfg_scale,
                          shift, device, fresh_noise, routes)
