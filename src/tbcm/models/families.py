"""Which module loads a diffusers teacher or student: one entry per model family.

A family module provides ``PIPELINE_PREFIXES`` (diffusers pipeline class names it takes, by
prefix), ``load_teacher(path, **options) -> Bundle``, ``load_student(path, meta, **options) ->
Bundle`` and ``write_student(bundle, folder)``. Everything else in tbcm sees only the Bundle:
a velocity network behind the TrigFlow adapter, a prompt encoder and a latent decoder.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..errors import UserError

FAMILIES = {"sana": "tbcm.models.sana_bundle", "flux": "tbcm.models.flux_bundle"}


def family_module(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}: tbcm knows {', '.join(['tbcm', *FAMILIES])}")
    return importlib.import_module(FAMILIES[name])


def family_of_pipeline(path: Path) -> str:
    """The family whose pipeline class names the ``_class_name`` of ``path/model_index.json``."""
    from .sana import pipeline_class_name

    cls = pipeline_class_name(path)
    for name in FAMILIES:
        try:
            module = family_module(name)
        except ModuleNotFoundError:  # a family whose module is not there yet
            continue
        if any(cls.startswith(prefix) for prefix in module.PIPELINE_PREFIXES):
            return name
    raise UserError(f"{path} holds a {cls or 'diffusers'} pipeline; tbcm distills "
                    f"{', '.join(FAMILIES)} pipelines: pass such a folder")


def quiet_libraries() -> None:
    """diffusers / transformers log warnings and weight-loading progress bars to stderr; tbcm keeps
    stderr for its own one-line errors and its progress bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
