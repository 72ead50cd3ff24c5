"""Loading a run's teacher and prompts: the teacher folder (tbcm or diffusers), the frozen guided
teacher, the prompts file and their encodings (in memory, or streamed through a disk cache)."""

from __future__ import annotations

from .. import distributed as dist_utils
from ..data import read_prompts_file
from ..errors import UserError
from .bundle import builtin_prompts_path, is_builtin, load_bundle
from .guidance import resolve_guidance
from .registry import get_family
from .teacher import Teacher
from .text_cache import DiskCachedEncoder


def load_prompts(spec: str) -> list[str]:
    """The prompts of a file (one per line), or of a built-in set (``builtin``, ``builtin:scenes``)."""
    return read_prompts_file(builtin_prompts_path(spec) if is_builtin(spec) else spec)


def teacher_options(cfg) -> dict:
    """How to load a diffusers teacher (ignored by tbcm teacher folders)."""
    return {"dtype": cfg.teacher_dtype, "text_cache": None if cfg.text_cache == "none" else cfg.text_cache,
            "time_multiplier": cfg.teacher_time_multiplier or None}


def check_family_supports(cfg, family: str) -> None:
    """What latent (diffusers) teachers cannot do yet, refused before any prompt is encoded."""
    fam = get_family(family)
    if not fam.pixel_space and cfg.source == "forward":
        raise UserError(f"source=forward trains on real images encoded by the VAE, which tbcm does not do for "
                        f"{family} teachers: use source=trajectory (TBCM needs no images) or teacher_x0")
    if not fam.pixel_space and fam.blank_latent is None and cfg.pairs.blank_threshold > 0:
        raise UserError(f"pairs.blank_threshold needs the latent of a blank image, unknown for {family} teachers: "
                        "set pairs.blank_threshold=0")


def load_teacher_and_prompts(cfg, dist: dist_utils.DistInfo | None = None, notes: list[str] | None = None):
    """``(teacher bundle, frozen guided teacher, prompts, their encodings)`` of a distillation config.

    Fills the config's unset guidance scales from the teacher first (:func:`resolve_guidance`),
    appending its one-line account to ``notes`` (the caller shows it once the run starts, after
    every input check, so a refused run still fails in one line).

    The built-in encoder encodes everything in memory (it is tiny). A diffusers encoder with a
    disk cache streams: each rank encodes its share of the prompts not cached yet (on the
    accelerator when there is one) straight into the cache, and the run reads each step's rows
    from there (:class:`~tbcm.models.text_cache.CachedConditions`), so memory does not grow with
    the number of prompts. Raises :class:`UserError` for a bad teacher folder, prompts file or prompt.
    """
    bundle = load_bundle(cfg.teacher, expect_kind="teacher", **teacher_options(cfg))
    check_family_supports(cfg, bundle.meta.family)
    note = resolve_guidance(cfg, bundle.meta)  # before the config is saved or any pair is drawn
    if note and notes is not None:
        notes.append(note)
    prompts = load_prompts(cfg.prompts)
    teacher = Teacher.from_bundle(bundle)
    teacher.guidance_interval = tuple(float(a) for a in cfg.guidance_interval) or None
    encoder = teacher.encoder
    if not isinstance(encoder, DiskCachedEncoder) or encoder.cache_dir is None:  # all encodings in memory
        return bundle, teacher, prompts, encoder.encode(prompts, progress=True)
    dist = dist if dist is not None else dist_utils.DistInfo()
    if dist.device.type == "cuda":
        encoder.move_text_encoders(dist.device)
    encoder.fill_cache(prompts, dist.rank, dist.world_size, progress=dist.is_main)
    encoder.move_text_encoders("cpu")
    dist_utils.barrier(dist)  # every rank's share is on disk before any rank reads another's
    return bundle, teacher, prompts, encoder.cached_conditions(prompts)
