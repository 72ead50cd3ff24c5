"""Budget check of the main job: `tbcm distill` on the embedded default, as a user runs it.

Measures, in one run on this machine: wall time and peak memory (max RSS of the child process)
of the whole command, then the quality of the samples (``tbcm.evaluation``, as ``tbcm eval``
prints it): FID on the shipped digit classifier's features against the 600 held-out real digits,
and adherence (the share the classifier assigns to the requested digit), for guided teacher
samples (16 steps) and 1/2/4-step student samples, over 10 digits x N seeds.

    python benchmarks/distill_budget.py --out runs/budget [--seeds 100] [key=value ...]

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

import torch

from tbcm.evaluation import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/budget")
    ap.add_argument("--seeds", type=int, default=100, help="samples per digit for FID and adherence")
    ap.add_argument("--cfg", type=float, default=None, help="same-guidance comparison (default: the student's)")
    ap.add_argument("--teacher-cfg", default="0.5,0.75,1,1.25,1.5,2,3,4.5", help="the teacher's guidance sweep")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    tbcm = shutil.which("tbcm") or str(Path(sys.executable).with_name("tbcm"))
    cmd = [tbcm, "distill", "--out", args.out, "--overwrite", "--no-progress", *args.overrides]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB

    result = evaluate(args.out, [1, 2, 4], n_per_class=args.seeds, teacher_steps=[16], cfg_scale=args.cfg,
                      teacher_cfgs=[float(w) for w in args.teacher_cfg.split(",")])
    cfg = result["cfg_scale"]
    rows = [("teacher, 16 steps, guided", result["teacher"]["16"])]
    rows += [(f"student, {n} step{'s' if n > 1 else ''}", result["student"][str(n)]) for n in (1, 2, 4)]
    tb = result["teacher_best"]

    print(f"\ncommand: {' '.join(['tbcm', *cmd[1:]])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"date: {datetime.date.today()}")
    print(f"\n| wall time | peak memory (max RSS) |\n|---|---|\n| {wall:.0f} s | {peak_mb:.0f} MB |")
    print(f"\nEach at its best guidance (teacher swept over {args.teacher_cfg} at 16 steps; the student over "
          f"the scales it was trained on, {result['student_cfgs']}):")
    print("\n| sampler | best guidance | FID (held-out digits) | adherence | FID / teacher's best |\n|---|---|---|---|---|")
    print(f"| teacher, 16 steps | {tb['cfg']:g} | {tb['fid']:.2f} | {tb['adherence']:.1%} | 1.00 |")
    for n, b in result["student_best"].items():
        print(f"| student, {n} step{'s' if n != '1' else ''} | {b['cfg']:g} | {b['fid']:.2f} | {b['adherence']:.1%} | "
              f"{result['ratio'][n]:.2f} |")
    print(f"\nSame guidance for both ({10 * args.seeds} samples, cfg {cfg:g}):")
    print("\n| sampler | FID (held-out digits) | adherence |\n|---|---|---|")
    for name, scores in rows:
        print(f"| {name} | {scores['fid']:.2f} | {scores['adherence']:.1%} |")


if __name__ == "__main__":
    main()
