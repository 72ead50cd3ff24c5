"""A ``tbcm distill`` run as ``tbcm eval`` finds it: the student folder, the run's teacher and prompts."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import UserError, brief
from ..models.bundle import BUILTIN, builtin_prompts_path, is_builtin

RUN_HINT = "pass a `tbcm distill` run folder or its student/ folder"
PROMPTS_LIMIT = 128  # prompts of a run's prompts file the fidelity of a latent student uses


def find_student(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(student folder, run folder or None)`` for a run folder or a student folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: {RUN_HINT}")
    if (path / "student" / "model.yaml").is_file():
        return path / "student", path
    if (path / "model.yaml").is_file():
        return path, (path.parent if (path.parent / "config.yaml").is_file() else None)
    raise UserError(f"{path} is neither a distill run folder nor a student folder: {RUN_HINT}")


def _run_config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as plain YAML (``{}`` if the folder has none)."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return {}
    try:
        raw = yaml.safe_load(config.read_text())
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{config} is not readable YAML ({brief(exc)}): fix it or pass DIR/student") from None
    return raw if isinstance(raw, dict) else {}


def run_teacher(run_dir: Path | None) -> str:
    """The ``teacher`` key of the run's ``config.yaml``; ``"builtin"`` without a run folder."""
    if run_dir is None:
        return BUILTIN
    teacher = _run_config(run_dir).get("teacher")
    return str(teacher) if teacher else BUILTIN


def run_prompts(run_dir: Path | None) -> tuple[list[str], str]:
    """``(prompts, source)``: the first :data:`PROMPTS_LIMIT` prompts of the run's prompts file
    (``config.yaml`` ``prompts``). Raises :class:`UserError` naming ``--prompts`` if there is none."""
    from ..data import read_prompts_file

    spec = _run_config(run_dir).get("prompts") if run_dir is not None else None
    if not spec:
        raise UserError("no prompts to measure fidelity on: pass --prompts FILE (one prompt per line), "
                        "or the run folder whose config.yaml names its prompts file")
    path = builtin_prompts_path(str(spec)) if is_builtin(str(spec)) else Path(str(spec))
    if not path.is_file():
        raise UserError(f"the run's prompts file {path} does not exist: pass --prompts FILE")
    return read_prompts_file(path)[:PROMPTS_LIMIT], str(path)
