"""Images from a distilled student, whatever kind it is: one interface for evaluation.

    gen = load_image_generator(Path("runs/default/student"), steps=1, cfg_scale=None, shift=None)
    images = gen.generate(["a handwritten digit 3", "a handwritten digit 7"], seeds=[0, 1])
    images.shape  # uint8 [2, 3, gen.resolution, gen.resolution], on the CPU

Image ``i`` depends only on its prompt and its seed ``seeds[i]`` (all of its noise, the initial
noise and that of later sampling steps, comes from a generator seeded with it), so the same
prompts and seeds give the same images on a rerun.

Which generator a student folder gets is decided in one place, :data:`GENERATORS`, by the
``family`` key of the folder's ``model.yaml`` (absent: ``"tbcm"``, the students ``tbcm distill``
writes). Another kind of student (e.g. a diffusers Sana student that decodes latents with its VAE)
adds one line there, e.g. ``"sana": "tbcm.models.sana_bundle:load_image_generator"``, naming a
function with the signature of :func:`load_tbcm_generator`; its module is imported only when such
a student is loaded.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import yaml
from torch import Tensor

from .errors import UserError, brief


class ImageGenerator(Protocol):
    """What evaluation needs from a student."""

    resolution: int  # images are square, resolution x resolution
    cfg_scale: float  # the guidance scale it generates with (the student's default if none was asked for)

    def check_prompts(self, prompts: list[str]) -> None:
        """Raise :class:`UserError` for a prompt it cannot take (before anything is generated)."""

    def generate(self, prompts: list[str], seeds: list[int]) -> Tensor:
        """uint8 RGB ``[len(prompts), 3, resolution, resolution]`` on the CPU; image ``i`` from
        ``prompts[i]`` and ``seeds[i]``."""


GeneratorLoader = Callable[..., ImageGenerator]  # (student_dir, steps, cfg_scale, shift, device=None)

# model.yaml `family` -> "module:function" that builds its ImageGenerator. The one place a new
# kind of student plugs in; the module is imported only when such a student is evaluated.
GENERATORS: dict[str, str] = {
    "tbcm": "tbcm.generate:load_tbcm_generator",
    # diffusers students: the same sampler in latent space, pixels from the teacher's VAE
    "sana": "tbcm.generate:load_tbcm_generator",
    "flux": "tbcm.generate:load_tbcm_generator",
}
DEFAULT_FAMILY = "tbcm"


def register_generator(family: str, loader: str | GeneratorLoader) -> None:
    """Add (or replace) the generator of a student family at run time: ``"module:function"`` or
    the function itself."""
    GENERATORS[family] = loader  # type: ignore[assignment]


def student_family(student_dir: str | os.PathLike) -> str:
    """The ``family`` key of ``student_dir/model.yaml`` (``"tbcm"`` when absent)."""
    meta_file = Path(student_dir) / "model.yaml"
    if not meta_file.is_file():
        raise UserError(f"{student_dir} has no model.yaml, it is not a student folder: "
                        "pass DIR/student of a `tbcm distill` run")
    try:
        raw = yaml.safe_load(meta_file.read_text())
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{meta_file} is not readable YAML ({brief(exc)}): fix or rewrite the student folder") from None
    family = raw.get("family", DEFAULT_FAMILY) if isinstance(raw, dict) else DEFAULT_FAMILY
    return str(family or DEFAULT_FAMILY)


def _resolve(family: str, loader: str | GeneratorLoader) -> GeneratorLoader:
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"the {family!r} student family needs {loader}, which cannot be loaded ({brief(exc)}): "
                        "install the extra it needs, e.g. pip install 'tbcm[diffusers]'") from None


def load_image_generator(student_dir: str | os.PathLike, steps: int, cfg_scale: float | None = None,
                         shift: float | None = None, device: str | torch.device | None = None) -> ImageGenerator:
    """The ``steps``-step generator of the student in ``student_dir``, by its ``model.yaml``
    family. ``cfg_scale`` / ``shift`` default to the student's own. Raises :class:`UserError`."""
    if steps < 1:
        raise UserError(f"steps must be at least 1 (got {steps})")
    family = student_family(student_dir)
    if family not in GENERATORS:
        raise UserError(f"{student_dir}/model.yaml names the student family {family!r}, which tbcm cannot generate "
                        f"images with: known families are {', '.join(sorted(GENERATORS))}")
    return _resolve(family, GENERATORS[family])(Path(student_dir), steps, cfg_scale, shift, device=device)


def to_uint8_rgb(pixels: Tensor) -> Tensor:
    """Flow-space pixels ``[B, C, H, W]`` in ``[-1, 1]`` (C = 1 or 3) to uint8 RGB ``[B, 3, H, W]``
    (grayscale repeated to three channels)."""
    out = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out.repeat(1, 3, 1, 1) if out.shape[1] == 1 else out


class TbcmGenerator:
    """The few-step sampler of a student written by ``tbcm distill``: a TinyDiT in pixel space
    (grayscale students give gray RGB images), or a diffusers student in latent space whose
    ``bundle.decode`` (the teacher's VAE) makes the pixels."""

    def __init__(self, bundle, steps: int, cfg_scale: float | None, shift: float | None,
                 device: str | torch.device | None = None):
        from .models.student import Student
        from .sampling import student_angles

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        extra = bundle.meta.extra
        self.cfg_scale = float(cfg_scale if cfg_scale is not None else extra.get("default_cfg_scale", 4.5))
        self.shift = float(shift if shift is not None else extra.get("shift", 2.5))
        self.steps = int(steps)
        self.angles = student_angles(self.steps, self.shift)
        self.student = Student(bundle.network, bundle.meta.sigma_d, bundle.meta.timestep_scale,
                               bundle.logvar_head).eval().to(self.device)
        self.encoder = bundle.encoder.eval().to(self.device)
        self.sigma_d = float(bundle.meta.sigma_d)
        self.shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
        self.decode = bundle.decode
        # pixel students: the sample size; latent students: what the VAE makes of one latent
        self.resolution = self.shape[-1] if self.decode is None else int(self.decode(torch.zeros(1, *self.shape)).shape[-1])

    def check_prompts(self, prompts: list[str]) -> None:
        if hasattr(self.encoder, "token_ids"):  # the word-level encoder knows a closed vocabulary
            self.encoder.token_ids(prompts)  # PromptError (a UserError) names the unknown word

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> Tensor:
        from .sampling import to_pixels
        from .trigflow import consistency_fn

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def noise() -> Tensor:  # one draw per image from its own generator
            return torch.stack([torch.randn(self.shape, generator=g) for g in gens]).to(self.device)

        sd = self.sigma_d
        cond = self.encoder.encode(prompts)
        w = torch.full((len(prompts),), self.cfg_scale, device=self.device)
        x = sd * noise()
        x0 = x
        for t_now, t_next in zip(self.angles[:-1], self.angles[1:]):  # as tbcm.sampling.student_sample
            t = torch.full((x.shape[0],), t_now, dtype=x.dtype, device=self.device)
            x0 = consistency_fn(x, t, self.student(x / sd, t, cond, w), sd)
            if t_next > 0:
                x = math.cos(t_next) * x0 + math.sin(t_next) * sd * noise()
        pixels = to_pixels(x0, sd) if self.decode is None else self.decode(x0)
        return to_uint8_rgb(pixels).cpu()


def load_tbcm_generator(student_dir: Path, steps: int, cfg_scale: float | None, shift: float | None,
                        device: str | torch.device | None = None) -> TbcmGenerator:
    """The loader of the ``"tbcm"`` family: :class:`TbcmGenerator` over ``load_bundle``."""
    from .models.bundle import load_bundle

    return TbcmGenerator(load_bundle(student_dir, expect_kind="student"), steps, cfg_scale, shift, device)
