"""Throughput of the training loop, side by side in one run on this machine:

* 1 process vs 2 processes (torchrun, gloo) on the embedded default, same total CPU threads;
* rolling the teacher out online vs reading a trajectory cache written by `tbcm trajectories`
  (and what writing that cache cost).

    python benchmarks/scale_throughput.py [--steps 60] [--threads 2]

Pairs per second are read from each run's metrics.csv (median of the logged windows after the
first 10 steps, so start-up and the first JVP trace are excluded).  Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def _median_pairs_per_s(run: Path, skip: int = 10) -> float:
    with (run / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > skip]
    return statistics.median(float(r["pairs_per_s"]) for r in rows)


def _peak_mb(run: Path) -> float:
    with (run / "metrics.csv").open() as f:
        return max(float(r["peak_mem_mb"]) for r in csv.DictReader(f))


def _run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2, help="total CPU threads, split across processes")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tbcm-scale-"))
    common = [f"steps={args.steps}", "log_every=5", "checkpoint_every=100000", "sample.seeds=1",
              "sample.student_steps=[1]"]
    tbcm = _bin("tbcm")
    rows = []

    one = tmp / "one"
    _run([tbcm, "distill", "--out", str(one), "--no-progress", f"threads={args.threads}", *common], args.threads)
    rows.append(("1 process, online trajectories", args.threads, _median_pairs_per_s(one), _peak_mb(one)))

    two = tmp / "two"
    per = max(1, args.threads // 2)
    _run([_bin("torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "tbcm.cli", "distill", "--out", str(two),
          "--no-progress", f"threads={per}", *common], per)
    rows.append(("2 processes (torchrun, gloo), online trajectories", 2 * per, _median_pairs_per_s(two), _peak_mb(two)))

    # Cache with as many trajectories as the online run consumed (8 prompts per step).
    cache = tmp / "cache"
    shards = 8
    per_shard = -(-args.steps * 8 // shards)
    write_s = _run([tbcm, "trajectories", "--out", str(cache), "--no-progress", f"threads={args.threads}",
                    f"cache.shards={shards}", f"cache.prompts_per_shard={per_shard}"], args.threads)
    cached = tmp / "cached"
    _run([tbcm, "distill", "--out", str(cached), "--no-progress", f"threads={args.threads}", "source=cache",
          f"cache.dir={cache}", *common], args.threads)
    rows.append(("1 process, pairs read from the cache", args.threads, _median_pairs_per_s(cached), _peak_mb(cached)))
    cache_pairs = shards * per_shard * 15
    cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 2**20

    print(f"command: python benchmarks/scale_throughput.py --steps {args.steps} --threads {args.threads}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; "
          f"date: {datetime.date.today()}\n")
    print("| training run | CPU threads in all | pairs / s (median) | peak memory per process (MB) |\n|---|---|---|---|")
    for name, threads, pps, peak in rows:
        print(f"| {name} | {threads} | {pps:.0f} | {peak:.0f} |")
    base = rows[0][2]
    print(f"\n2 processes / 1 process: {rows[1][2] / base:.2f}x; cache / online: {rows[2][2] / base:.2f}x")
    print(f"writing the cache: {cache_pairs} pairs in {write_s:.1f} s wall (process start included) = "
          f"{cache_pairs / write_s:.0f} pairs/s; {cache_mb:.1f} MB on disk")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
