"""Budget check of the main job: `tbcm distill` on the embedded default, as a user runs it.

Measures, in one run on this machine: wall time and peak memory (max RSS of the child process)
of the whole command, then how recognisable the samples are: the share of guided teacher samples
(16 steps) and of 1/2/4-step student samples that a digit classifier (an SVM fit on scikit-learn's
real digits, 97% accurate on held-out ones) assigns to the requested digit, over 10 digits x N seeds.

    python benchmarks/distill_budget.py --out runs/budget [--seeds 20] [key=value ...]

Prints a markdown table; the numbers in docs/results.md come from this script.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.previews import student_samples, teacher_samples

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]


def adherence(pixels: torch.Tensor, seeds: int, clf) -> float:
    """Share of samples ``[10 * seeds, 1, 8, 8]`` in [-1, 1] classified as their requested digit."""
    flat = ((pixels[:, 0] + 1) / 2).reshape(pixels.shape[0], -1).numpy()
    return float((clf.predict(flat) == np.repeat(np.arange(10), seeds)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/budget")
    ap.add_argument("--seeds", type=int, default=20, help="samples per digit for adherence")
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    tbcm = shutil.which("tbcm") or str(Path(sys.executable).with_name("tbcm"))
    cmd = [tbcm, "distill", "--out", args.out, "--overwrite", "--no-progress", *args.overrides]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB

    digits = load_digits()
    clf = SVC(gamma=0.25).fit(digits.data / 16.0, digits.target)
    teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
    b = load_bundle(Path(args.out) / "student", expect_kind="student")
    student = Student(b.network, b.meta.sigma_d, b.meta.timestep_scale).eval()
    rows = [("teacher, 16 steps, guided", adherence(teacher_samples(teacher, PROMPTS, args.cfg, 16, args.seeds), args.seeds, clf))]
    for n in (1, 2, 4):
        px = student_samples(student, b.encoder, PROMPTS, args.cfg, n, args.seeds, first_seed=1000)
        rows.append((f"student, {n} step{'s' if n > 1 else ''}", adherence(px, args.seeds, clf)))

    print(f"\ncommand: {' '.join(['tbcm', *cmd[1:]])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"date: {datetime.date.today()}")
    print(f"\n| wall time | peak memory (max RSS) |\n|---|---|\n| {wall:.0f} s | {peak_mb:.0f} MB |")
    print(f"\n| sampler | requested digit recognised ({10 * args.seeds} samples, cfg {args.cfg}) |\n|---|---|")
    for name, acc in rows:
        print(f"| {name} | {acc:.1%} |")


if __name__ == "__main__":
    main()
