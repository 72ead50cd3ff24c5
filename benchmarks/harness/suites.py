"""Pinned suites: ``benchmarks/suites/NAME.yaml``, each a whole ``tbcm distill`` config (every key),
so a rerun trains the recipe that was recorded even after a library default or a recipe in
configs/ moves. Change a suite only on purpose; a new recipe is a new suite (:func:`pin`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .store import ROOT, config_dict

SUITES_DIR = ROOT / "benchmarks" / "suites"


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name: str) -> Path:
    """``benchmarks/suites/NAME.yaml``, or ``name`` itself when it is a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = SUITES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"no suite {name!r}: choose one of {', '.join(suite_names())} (benchmarks/suites/)")
    return path


def load_suite(name: str, overrides=()):
    """The suite's ``DistillConfig`` with ``key=value`` ``overrides`` on top (recorded in the store)."""
    from tbcm.config import DistillConfig, load_config

    return load_config(DistillConfig, suite_path(name), list(overrides))


def config_hash(cfg) -> str:
    """8 hex digits of the resolved config: runs of the same config share a folder name."""
    return hashlib.sha256(json.dumps(config_dict(cfg), sort_keys=True).encode()).hexdigest()[:8]


def pin(dest: str | Path, source: str | Path | None = None, overrides=(), note: str = "") -> Path:
    """Write ``dest``: the whole config of ``source`` (a YAML file; ``None``: the library default,
    ``DistillConfig()``) with ``overrides``, every key written out, after a comment ``note``."""
    from tbcm.config import DistillConfig, load_config, save_config

    dest = Path(dest)
    save_config(load_config(DistillConfig, source, list(overrides)), dest)
    if note:
        dest.write_text("".join(f"# {line}\n".replace("# \n", "#\n") for line in note.splitlines()) + dest.read_text())
    return dest
