"""The built-in family (``family: tbcm``): :class:`~tbcm.models.builtin.dit.TinyDiT` in pixel
space with the word-level :class:`~tbcm.models.builtin.text.PromptEncoder`.

Its folders hold both parts (``network.safetensors``, ``prompt_encoder.safetensors``), teachers
and students alike, so a folder is self-contained. The network takes ``timestep = 1000 tau``
(``timestep_scale`` 1000 in ``model.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from ...errors import UserError, brief
from ..bundle import Bundle, ModelMeta, load_logvar_head, state_to_disk
from ..family import Family
from .dit import DiTConfig, TinyDiT
from .text import PromptEncoder


def load_folder(path: Path, meta: ModelMeta, hint: str = "pass a folder written by tbcm", **_) -> Bundle:
    """A built-in teacher or student folder; the loader options of the diffusers families do not apply."""
    try:
        network = TinyDiT(DiTConfig(**meta.network))
        encoder = PromptEncoder(**meta.prompt_encoder)
        network.load_state_dict(load_file(str(path / "network.safetensors")))
        encoder.load_state_dict(load_file(str(path / "prompt_encoder.safetensors")))
        logvar_head = load_logvar_head(path)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path} has missing or mismatched weights ({brief(exc)}): {hint}") from None
    return Bundle(meta, network.eval(), encoder.eval(), logvar_head)


def write_folder(bundle: Bundle, folder: Path) -> None:
    save_file(state_to_disk(bundle.network), str(Path(folder) / "network.safetensors"))
    save_file(state_to_disk(bundle.encoder), str(Path(folder) / "prompt_encoder.safetensors"))


FAMILY = Family(
    name="tbcm", load_folder=load_folder, write_folder=write_folder, pixel_space=True,
    no_export="--format diffusers exports students of diffusers teachers (a tbcm student folder is already "
              "self-contained: generate with `tbcm sample`)")
