"""Model folders on disk: a network, its prompt encoder and the metadata that travels with them.

A folder written by :func:`save_bundle` holds

* ``model.yaml``             -- kind (teacher / student), sigma_d, image shape, network config;
* the family's network files (built-in family: ``network.safetensors`` (TinyDiT) and
  ``prompt_encoder.safetensors``; a diffusers family: ``transformer/``);
* ``logvar_head.safetensors``    -- students only: the learned loss weighting head.

A LoRA student's folder holds its adapters and the modules trained in full instead of the
network, and names (``lora.base`` in ``model.yaml``) the teacher whose weights are its base
(:mod:`tbcm.models.lora`).

The built-in teacher is such a folder inside the package (``tbcm/assets/teacher``).
A diffusers pipeline folder (``model_index.json``) is also a teacher, and a diffusers student is a
``model.yaml`` (``family: <name>``) beside the family's own files: which family reads or writes a
folder is looked up in :mod:`tbcm.models.registry`, whose families implement
:class:`tbcm.models.family.Family`.
Every problem on load is a :class:`UserError` naming the folder and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from typing import Callable

import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..atomic import staged_dir
from ..errors import UserError, brief

FORMAT = "tbcm-model/1"
BUILTIN = "builtin"
BUILTIN_SCENES = "builtin:scenes"  # the scenes miniature's teacher and its training prompts
_ASSETS = {BUILTIN: ("teacher", "prompts.txt"), BUILTIN_SCENES: ("scenes_teacher", "scenes_prompts.txt")}


def builtin_teacher_path(name: str = BUILTIN) -> Path:
    return Path(str(resources.files("tbcm") / "assets" / _ASSETS[name][0]))


def builtin_prompts_path(name: str = BUILTIN) -> Path:
    return Path(str(resources.files("tbcm") / "assets" / _ASSETS[name][1]))


def is_builtin(spec: str) -> bool:
    """``"builtin"`` (digits) or ``"builtin:scenes"``: a shipped teacher / prompts file."""
    return str(spec) in _ASSETS


@dataclass
class ModelMeta:
    """What a model folder says about itself (``model.yaml``)."""

    kind: str  # "teacher" or "student"
    sigma_d: float
    channels: int
    image_size: int
    network: dict
    prompt_encoder: dict
    timestep_scale: float = 1000.0
    blank_value: float = -1.0  # flow-space pixel value of a blank image (degenerate filter)
    extra: dict = field(default_factory=dict)  # provenance: training config, source teacher, ...
    family: str = "tbcm"  # a name in tbcm.models.registry.FAMILIES ("tbcm": TinyDiT + word encoder)
    lora: dict = field(default_factory=dict)  # a LoRA student's adapters (tbcm.models.lora.record); {}: none
    # teachers: the classifier-free guidance scale its owner samples it at; a distillation that
    # does not set cfg_scales trains around it (tbcm.models.guidance). None: the family's default
    guidance: float | None = None

    def to_dict(self) -> dict:
        out = {"format": FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}
        if not out["lora"]:  # a full model's model.yaml stays as it was
            del out["lora"]
        if out["guidance"] is None:  # as does a teacher's that names no guidance
            del out["guidance"]
        return out


@dataclass
class Bundle:
    """``network(x_flow, tau * timestep_scale, cond, guidance=None) -> v``; ``encoder.encode(prompts)``;
    ``decode(x0)`` TrigFlow-space samples ``[B, C, H, W]`` -> pixels ``[B, 3 or 1, H', W']`` in [-1, 1]
    (``None``: the samples are pixels already)."""

    meta: ModelMeta
    network: nn.Module
    encoder: nn.Module
    logvar_head: nn.Module | None = None
    decode: Callable[[Tensor], Tensor] | None = None


def state_to_disk(module: nn.Module) -> dict:
    """``module``'s weights as contiguous CPU tensors, as safetensors writes them."""
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def write_bundle_files(bundle: Bundle, folder: Path) -> None:
    """Write a model folder's files into an existing ``folder`` (no atomicity of its own)."""
    from .registry import get_family  # local: the families import this module

    folder = Path(folder)
    (folder / "model.yaml").write_text(yaml.safe_dump(bundle.meta.to_dict(), sort_keys=False))
    if bundle.meta.lora:
        from .lora import write_folder  # local: lora imports this module

        write_folder(bundle, folder)
    else:
        get_family(bundle.meta.family).write_folder(bundle, folder)
    if bundle.logvar_head is not None:
        save_file(state_to_disk(bundle.logvar_head), str(folder / "logvar_head.safetensors"))


def save_bundle(bundle: Bundle, path: str | os.PathLike) -> Path:
    """Write a model folder atomically: a temp folder beside ``path``, renamed into place.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    with staged_dir(path) as tmp:
        write_bundle_files(bundle, tmp)
    return Path(path)


def resolve_model_path(path: str | os.PathLike) -> Path:
    return builtin_teacher_path(str(path)) if is_builtin(str(path)) else Path(path)


def load_logvar_head(folder: Path) -> nn.Module | None:
    """``folder/logvar_head.safetensors`` as a :class:`~tbcm.models.student.LogvarHead`, if there is one."""
    from .student import LogvarHead  # local: student imports this module

    if not (Path(folder) / "logvar_head.safetensors").is_file():
        return None
    head = LogvarHead()
    head.load_state_dict(load_file(str(Path(folder) / "logvar_head.safetensors")))
    return head


def hint_for(kind: str | None) -> str:
    return {
        "teacher": "pass a folder written by `tbcm teacher train`, a diffusers pipeline folder, or teacher=builtin (builtin:scenes)",
        "student": "pass DIR/student of a `tbcm distill` run",
    }.get(kind or "", "pass a folder written by tbcm")


def load_bundle(path: str | os.PathLike, expect_kind: str | None = None, **options) -> Bundle:
    """Load a model folder (``"builtin"`` is the shipped teacher). Raises :class:`UserError`.

    ``options`` (``dtype``, ``text_cache``, ``time_multiplier``) go to the family's loader.
    """
    from .registry import family_of_pipeline, get_family  # local: the families import this module

    path = resolve_model_path(path)
    if (path / "model_index.json").is_file():  # a diffusers pipeline folder: a teacher
        if expect_kind not in (None, "teacher"):
            raise UserError(f"{path} is a diffusers pipeline (a teacher), not a {expect_kind}: {hint_for(expect_kind)}")
        return get_family(family_of_pipeline(path)).load_pipeline(path, **options)
    what = expect_kind or "model"
    hint = hint_for(expect_kind)
    if not path.is_dir():
        raise UserError(f"{what} folder {path} does not exist: {hint}")
    meta_file = path / "model.yaml"
    if not meta_file.is_file():
        raise UserError(f"{path} has no model.yaml, it is not a tbcm {what} folder: {hint}")
    try:
        raw = yaml.safe_load(meta_file.read_text())
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
            raise ValueError(f"expected format {FORMAT}")
        meta = ModelMeta(**raw)
    except Exception as exc:  # noqa: BLE001 - any parse problem is the same user-facing error
        raise UserError(f"{meta_file} is malformed ({brief(exc)}): {hint}") from None
    if expect_kind and meta.kind != expect_kind:
        raise UserError(f"{path} holds a {meta.kind}, not a {expect_kind}: {hint}")
    if meta.lora:
        from .lora import load_folder  # local: lora imports this module

        return load_folder(path, meta, hint=hint, **options)
    return get_family(meta.family).load_folder(path, meta, hint=hint, **options)
