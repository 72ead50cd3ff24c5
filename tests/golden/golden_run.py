"""The golden run: 20 steps of the embedded default recipe (configs/distill_digits.yaml), alone and
with each optional loss term, recorded before the trainer's redesign so that a refactor can prove it
kept every measured behaviour (same metrics.csv values, same student weights).

    python -m tests.golden.golden_run record   # rewrite tests/golden/golden.json (only on purpose)

tests/test_golden.py runs the same cases and compares them with the recorded file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
GOLDEN = HERE / "golden.json"
CONFIG = HERE.parent.parent / "configs" / "distill_digits.yaml"
# short, single-threaded, a small preview grid: the training maths is what is compared
COMMON = ["steps=20", "log_every=1", "checkpoint_every=10", "threads=1", "preview.seeds=1", "sampler.tune=false",
          "preview.teacher_steps=2"]
CASES = {
    "default": [],
    "adversarial": ["objective.adversarial.weight=0.5", "objective.adversarial.samples=4"],
    "distribution_matching": ["objective.distribution_matching.weight=0.05",
                              "objective.distribution_matching.samples=4"],
}
# columns that depend on the machine's speed, not on the maths
TIMING = {"pairs_per_s", "seconds", "peak_mem_mb", "pool_mb"}


def run_case(name: str, out: Path, overrides=(), config: Path = CONFIG) -> dict:
    """Train one case into ``out`` and return its fingerprint: metrics rows and weight sums."""
    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller

    torch.set_num_threads(1)
    cfg = load_config(DistillConfig, config, [*COMMON, *CASES[name], *overrides])
    Distiller(cfg).run(out, progress=False)
    return fingerprint(out)


def fingerprint(out: Path) -> dict:
    with (out / "metrics.csv").open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    weights = {**load_file(str(out / "student" / "network.safetensors")),
               **{f"logvar_head.{k}": v for k, v in load_file(str(out / "student" / "logvar_head.safetensors")).items()}}
    digest = hashlib.sha256()
    sums = {}
    for key in sorted(weights):
        t = weights[key].float().contiguous()
        digest.update(key.encode())
        digest.update(t.numpy().tobytes())
        sums[key] = [float(t.double().sum()), float(t.double().abs().sum())]
    return {"metrics": rows, "weight_sums": sums, "weights_sha256": digest.hexdigest()}


def record(tmp: Path) -> None:
    GOLDEN.write_text(json.dumps({name: run_case(name, tmp / name) for name in CASES}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python -m tests.golden.golden_run record")
    with tempfile.TemporaryDirectory() as d:
        record(Path(d))
