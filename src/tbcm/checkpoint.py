"""Training checkpoints: one file per save, written atomically, the last N kept.

A checkpoint is ``torch.save`` of a dict of tensors, numbers and strings (loadable with
``weights_only=True``): model, EMA, optimiser, step counters, every RNG state and the data
position.  It is written to a temp file in the same folder, flushed to disk, then renamed over
its final name, so a crash, a kill or a full disk mid-save never leaves a half-written
checkpoint under a real name, and older checkpoints are deleted only after the new one is in place.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .atomic import atomic_write
from .errors import UserError

NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (temp files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if NAME.match(p.name)), key=lambda p: int(NAME.match(p.name)[1]))


def save_checkpoint(state: dict, folder: Path, step: int, keep: int) -> Path:
    """Write ``state`` as ``folder/step_XXXXXXXX.pt`` atomically, then prune to the last ``keep``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(folder, step)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(final, write, fsync=True)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path) -> dict:
    try:
        # memory-mapped: every rank of a big run reads the one file without each holding a full copy
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"checkpoint {path} cannot be read ({type(exc).__name__}): delete it to resume from "
                        f"the one before") from None


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None
