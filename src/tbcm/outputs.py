"""Output folders that a failed or killed run never corrupts.

A run writes into a hidden temp folder beside ``DIR`` and only renames it to ``DIR`` once it has
finished; an existing ``DIR`` is refused unless ``overwrite`` is set, and even then it is replaced
only at that final rename.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import staged_dir
from .errors import UserError


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``out`` unless ``overwrite``; never writes anything."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} is not empty: choose another --out or pass --overwrite")
    return out


@contextmanager
def staged_output_dir(out: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temp folder to write into; on success it becomes ``out`` (replacing the old one)."""
    out = check_output_dir(out, overwrite)
    with staged_dir(out) as tmp:
        yield tmp
