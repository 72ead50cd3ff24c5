"""``tbcm export RUN --format diffusers --out DIR``: a student as a folder a diffusers pipeline runs.

Which pipeline, and whether there is one, is the student's family's business
(:attr:`tbcm.models.family.Family.export`; Sana: ``SanaSprintPipeline``, FLUX: ``FluxPipeline``,
SD3: ``StableDiffusion3Pipeline``, each with ``tbcm_sampling.json``, the call arguments for 1, 2
and 4 steps; shared parts in :mod:`tbcm.models.families.exporting`). The folder is written to
a temporary folder beside ``DIR`` and renamed into place: a failed export leaves nothing
half-written, and an existing ``DIR`` is replaced only with ``overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .atomic import staged_dir
from .errors import UserError
from .models.bundle import load_bundle
from .models.lora import merged
from .models.registry import get_family

FORMATS = ("diffusers",)


def export_diffusers(run_or_student: str | os.PathLike, out: str | os.PathLike,
                     overwrite: bool = False) -> tuple[Path, str]:
    """Write the pipeline folder of the student of a run (or a student folder) to ``out``.

    Returns ``out`` and one line on how to load it. Raises :class:`UserError` where the student's
    family has no pipeline that runs it (the message says how to generate instead).
    """
    from .evaluation.evaluate import find_student

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: choose a new --out or pass --overwrite")
    student_dir, _ = find_student(run_or_student)
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    bundle.network = merged(bundle.network)  # a LoRA student exports whole, its adapters merged in
    family = get_family(bundle.meta.family)
    if family.export is None:
        raise UserError(f"{student_dir} is a {bundle.meta.family} student; {family.no_export}")
    with staged_dir(out) as tmp:
        note = family.export(bundle, tmp, out)
    return out, note
