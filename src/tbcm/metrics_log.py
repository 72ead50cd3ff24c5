"""Training metrics: one CSV row per logged step, and TensorBoard scalars when it is installed."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricsLog:
    """``log(step, {name: float})`` appends to ``path`` (CSV, header from the first row)."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None):
        self.path = Path(path)
        self._file = self.path.open("w", newline="")
        self._writer: csv.DictWriter | None = None
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

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
