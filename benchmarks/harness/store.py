"""The results store: one JSON-lines file per table (``quality``, ``curves``, ``sampler``,
``cost``) under ``benchmarks/results/``, one record per line, each with a manifest of what made it.

A record is a dict with ``"key"`` (what it measures: a later record with the same key replaces an
earlier one in :meth:`Store.latest`) and ``"manifest"``: ``{"git_commit", "git_dirty", "config"
(the resolved full config, or ``{name: config}`` for a side-by-side run), "command" (the command
line), "machine" ({"cpu", "cores", "torch", "python", "platform", "threads"}), "date" (UTC, ISO)}``.
Appending never rewrites a line, so a killed benchmark loses at most the record it was writing.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORE = ROOT / "benchmarks" / "results"
MANIFEST_KEYS = ("git_commit", "git_dirty", "config", "command", "machine", "date")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def config_dict(cfg) -> dict:
    """A config (a ``DistillConfig``, or already a dict) as plain JSON data."""
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))


def manifest(argv: list[str], config=None, configs: dict | None = None) -> dict:
    """What made a record: commit, the resolved ``config`` (or ``configs``, ``{name: config}`` for a
    side-by-side run), command line, machine, date."""
    # uncommitted code or configs (the store's own files, which every record changes, do not count)
    dirty = _git("status", "--porcelain", "--", "src", "configs", "benchmarks", ":(exclude)benchmarks/results")
    resolved = ({name: config_dict(c) for name, c in configs.items()} if configs is not None
                else config_dict(config) if config is not None else None)
    commit = _git("rev-parse", "HEAD")
    if os.environ.get("TBCM_GIT_COMMIT"):
        # a copy of the tree on a lent GPU machine: its .git (if any) need not be the tree's commit
        # (one such copy carried the history as of the session's start), so the sender names it
        commit, dirty = os.environ["TBCM_GIT_COMMIT"], os.environ.get("TBCM_GIT_DIRTY", "")
    return {"git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None,
            "config": resolved, "command": shlex.join(argv), "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


class Store:
    """The JSON-lines tables in ``root`` (default ``benchmarks/results/``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else DEFAULT_STORE

    def path(self, table: str) -> Path:
        return self.root / f"{table}.jsonl"

    def append(self, table: str, record: dict) -> dict:
        if "key" not in record or "manifest" not in record:
            raise ValueError("a record needs a 'key' and a 'manifest'")
        self.root.mkdir(parents=True, exist_ok=True)
        # one write(2) on an O_APPEND descriptor: benchmarks run side by side append to the same
        # table, and a buffered file object may split a long record into several writes that interleave
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path(table), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path(table)}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def read(self, table: str) -> list[dict]:
        """Every record of ``table``, oldest first; a half-written last line (a killed run) is skipped."""
        path = self.path(table)
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def latest(self, table: str) -> list[dict]:
        """The last record of each key, in the order the keys first appeared."""
        by_key: dict[str, dict] = {}
        for row in self.read(table):
            by_key[row["key"]] = row
        return list(by_key.values())
