"""The one list of model families: a family's name -> the module holding its ``FAMILY``.

Adding a family is one folder under ``tbcm/models/families/`` with a ``FAMILY``
(:class:`~tbcm.models.family.Family`) in its ``__init__.py``, and one line here. A module is
imported only when its family is asked for, so a run of the built-in family never imports diffusers.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import UserError, brief
from .family import Family

FAMILIES = {
    "tbcm": "tbcm.models.builtin",
    "sana": "tbcm.models.families.sana",
    "flux": "tbcm.models.families.flux",
    "sd3": "tbcm.models.families.sd3",
}


def get_family(name: str) -> Family:
    """The :class:`Family` called ``name`` (``model.yaml``'s ``family``); a :class:`UserError` if unknown."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}: known families are {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY


def pipeline_class_name(path: Path) -> str:
    """The ``_class_name`` of ``path/model_index.json`` (a diffusers pipeline folder)."""
    try:
        return str(json.loads((Path(path) / "model_index.json").read_text()).get("_class_name", ""))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}/model_index.json is not readable JSON ({brief(exc)}): pass a diffusers pipeline "
                        "folder written by save_pretrained") from None


def family_of_pipeline(path: Path) -> str:
    """The family whose pipeline class names the ``_class_name`` of ``path/model_index.json``."""
    cls = pipeline_class_name(path)
    takers = []
    for name in FAMILIES:
        family = get_family(name)
        if family.load_pipeline is not None:
            takers.append(name)
            if any(cls.startswith(prefix) for prefix in family.pipeline_prefixes):
                return name
    raise UserError(f"{path} holds a {cls or 'diffusers'} pipeline; tbcm distills "
                    f"{', '.join(takers)} pipelines: pass such a folder")
