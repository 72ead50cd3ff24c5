"""Training metrics: one CSV row per logged step, and TensorBoard scalars when it is installed."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLog:
    """``log(step, {name: float})`` appends to ``path`` (CSV, header from the first row).

    ``resume_from``: keep the rows of an existing file up to that step (a resumed run drops
    the rows logged after its checkpoint, which it is about to redo) and append after them.
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, resume_from: int = 0):
        self.path = Path(path)
        self._writer: csv.DictWriter | None = None
        kept: list[dict] = []
        if resume_from > 0 and self.path.is_file():
            with self.path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_from]
        if kept:  # rewrite the kept rows atomically, then append after them
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(kept[0]))
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, self.path)
            self._file = self.path.open("a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(kept[0]))
        else:
            self._file = self.path.open("w", newline="")
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow({k: row.get(k, "") for k in self._writer.fieldnames})
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)

    def add_image(self, tag: str, image, step: int) -> None:
        """A PIL image into TensorBoard (when installed); the CSV holds numbers only."""
        if self._tb is not None:
            import numpy as np

            self._tb.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
