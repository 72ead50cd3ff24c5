"""Train a pinned suite on given training seeds, optionally keeping a checkpoint every N steps, and
turn those checkpoints into student folders :func:`harness.score.score_run` can score (the curve).

A run folder is ``RUNS/SUITE/SPLIT_sSEED_HASH`` (``HASH``: the resolved config's, so another
override is another folder). A run that finished with the same config is not trained again
(``bench_done.json`` marks it), so a killed benchmark resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .suites import config_hash, load_suite

DONE = "bench_done.json"


@dataclass
class Run:
    suite: str
    split: str
    seed: int
    cfg: object  # the resolved DistillConfig
    dir: Path

    @property
    def hash(self) -> str:
        return config_hash(self.cfg)


def plan_run(suite: str, split: str, seed: int, runs: str | Path, overrides=(), threads: int = 1,
             checkpoint_every: int | None = None) -> Run:
    """The run of ``suite`` on training seed ``seed``: its config (``seed``, ``threads`` and, for a
    curve, ``checkpoint_every`` with every checkpoint kept, on top of ``overrides``) and folder."""
    extra = [f"seed={seed}", f"threads={threads}"]
    if checkpoint_every:
        extra.append(f"checkpoint_every={checkpoint_every}")
    cfg = load_suite(suite, [*overrides, *extra])
    if checkpoint_every:  # keep every checkpoint of the curve
        cfg = load_suite(suite, [*overrides, *extra, f"keep_checkpoints={cfg.steps // checkpoint_every + 1}"])
    name = Path(suite).stem
    run = Run(name, split, seed, cfg, Path(runs) / name / f"{split}_s{seed}")
    run.dir = run.dir.with_name(f"{run.dir.name}_{run.hash}")
    return run


def is_done(run: Run) -> bool:
    marker = run.dir / DONE
    return marker.is_file() and json.loads(marker.read_text()).get("config_hash") == run.hash


def train(run: Run, progress: bool = False):
    """Train ``run`` unless it finished before; returns the :class:`tbcm.train.Distiller` when it
    trained (``None`` when skipped)."""
    from tbcm.train import Distiller

    if is_done(run):
        return None
    d = Distiller(run.cfg)
    d.run(run.dir, overwrite=True, progress=progress)
    (run.dir / DONE).write_text(json.dumps({"config_hash": run.hash, "steps": d.step}))
    return d


def metrics_rows(run_dir: Path) -> list[dict]:
    with (Path(run_dir) / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def training_cost(run_dir: Path) -> dict:
    """``{"steps", "seconds", "peak_mem_mb"}`` of a finished run, from its metrics.csv."""
    rows = metrics_rows(run_dir)
    last = rows[-1]
    return {"steps": int(last["step"]), "seconds": float(last["seconds"]),
            "peak_mem_mb": max(float(r["peak_mem_mb"]) for r in rows)}


def checkpoint_students(run: Run, distiller=None) -> list[dict]:
    """For every checkpoint of ``run``: ``{"step", "seconds", "dir"}``, where ``dir`` holds the
    checkpoint's EMA student (``student/``) and the run's ``config.yaml`` (so the scorer finds the
    teacher); ``seconds`` are training seconds at the last logged step at or before it."""
    from tbcm.checkpoint import list_checkpoints, load_checkpoint
    from tbcm.train import Distiller
    from tbcm.train.outputs import save_student

    logged = sorted((int(r["step"]), float(r["seconds"])) for r in metrics_rows(run.dir))
    points = []
    for ckpt in list_checkpoints(run.dir / "checkpoints"):
        state = load_checkpoint(ckpt)
        step = int(state["step"])
        folder = run.dir / "curve" / f"step_{step:08d}"
        if not (folder / "student" / "model.yaml").is_file():
            d = distiller if distiller is not None else (distiller := Distiller(run.cfg))
            d.ema.load_full_state_dict(state["ema"])
            d.step = step
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.dir / "config.yaml", folder / "config.yaml")
            save_student(d, d.student_for_sampling(), folder / "student")
        seconds = max((s for k, s in logged if k <= step), default=0.0)
        points.append({"step": step, "seconds": seconds, "dir": folder})
    return points
