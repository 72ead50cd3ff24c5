"""Training cost on this machine, side by side in one run: CPU time per step and per pair, and peak
memory, of pinned suites (default: TBCM with the trajectory pool, TBCM with each step's own
rollout, and the forward-noised sCM baseline), with the ratios printed from that one run.

Each variant runs in a fresh process of its own (its peak memory is its own), ``--rounds`` times
in turn so that machine load falls on all alike; a round's time per step is the mean over its timed
steps (so the pool's refills count in their share: keep ``--steps`` and ``--warmup`` multiples of
``pairs.pool_prompts / prompts_per_step``, 8 in digits_default), and the median round is kept. ``--same-process``
builds them all in one process and interleaves their steps (fair time, but the memory is the
whole process's). One record per run (``cost.jsonl``). ``--plan`` prints the training-state
memory arithmetic for Sana students instead (docs/scaling.md; not a measurement).

    python benchmarks/cost.py                                   # the three default variants
    python benchmarks/cost.py --variant "tbcm digits_default" \
        --variant "dmd digits_default objective.distribution_matching.weight=0.05"
    python benchmarks/cost.py --plan --gpus 8 32
    python benchmarks/cost.py --smoke
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `benchmarks.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cli, tables  # noqa: E402
from benchmarks.harness.store import manifest  # noqa: E402
from benchmarks.harness.suites import load_suite  # noqa: E402
from benchmarks.harness.cli import SMOKE  # noqa: E402

# name, suite, overrides: TBCM as shipped (a pool of 64 prompts), TBCM rolling out each step's own
# prompts, and the sCM baseline on forward-noised real digits (one guided teacher call per pair)
VARIANTS = ["tbcm_pool digits_default", "tbcm_rollout digits_default pairs.pool_prompts=0",
            "scm_forward digits_forward"]

# --plan: nominal parameter counts from the model names, and the Gemma-2 2B text encoder
GB = 1e9
PLAN_SIZES = {"Sana 0.6B": 0.6e9, "Sana 1.6B": 1.6e9}
TEXT_ENCODER = 2.6e9


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=None, metavar="'NAME SUITE [KEY=VALUE ...]'",
                    help="a variant (repeat; the first is the ratios' base); default: " + "; ".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=24, help="timed steps of each variant per round")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps first (start-up, the first JVP trace)")
    ap.add_argument("--rounds", type=int, default=2, help="times each variant runs, in turn")
    ap.add_argument("--same-process", action="store_true", help="all variants in this process, steps interleaved")
    ap.add_argument("--plan", action="store_true", help="print the Sana memory arithmetic and stop")
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 32], help="--plan: GPU counts")
    cli.add_common(ap, runs=False)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.rounds = min(args.steps, 2), min(args.warmup, 1), 1
    return args


def plan(gpus: list[int]) -> str:
    """Training-state memory per GPU for Sana students: fp32 weights 4 B + grads 4 B + AdamW moments
    8 B + EMA 4 B per parameter, replicated (DDP) or sharded (FSDP2); a bf16 teacher; the text
    encoder in bf16 only while prompts are encoded. Activations are not included."""
    lines = ["| model | GPUs | student state, DDP (GB/GPU) | student state, FSDP2 (GB/GPU) | "
             "teacher bf16 (GB/GPU) | text encoder bf16, encode phase only (GB) |", "|---|---|---|---|---|---|"]
    for name, n in PLAN_SIZES.items():
        student = n * (4 + 4 + 8 + 4) / GB
        for g in gpus:
            lines.append(f"| {name} | {g} | {student:.1f} | {student / g:.2f} | {n * 2 / GB:.1f} | "
                         f"{TEXT_ENCODER * 2 / GB:.1f} |")
    return "\n".join(lines)


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(cfg):
    from tbcm.train import Distiller

    return Distiller(cfg)


def _step(d) -> tuple[float, int, int]:
    """One training step: ``(seconds, pairs, teacher calls)``."""
    calls = int(getattr(d.source, "teacher_calls", 0))
    start = time.perf_counter()
    stats = d.train_step()
    return time.perf_counter() - start, int(stats["pairs"]), int(stats["teacher_calls"]) - calls


def measure(cfg, steps: int, warmup: int, threads: int) -> dict:
    """One variant in this process: each step's time after ``warmup``, pairs and teacher calls per
    step, and the process's RSS before building it and at its peak. Runs in a fresh process."""
    import torch

    torch.set_num_threads(threads)
    base = _rss_mb()
    d = _build(cfg)
    for _ in range(warmup):
        _step(d)
    timed = [_step(d) for _ in range(steps)]
    return {"seconds": [t for t, _, _ in timed], "pairs": timed[-1][1],
            "teacher_calls": statistics.fmean(c for _, _, c in timed), "base_rss_mb": base, "peak_rss_mb": _peak_mb()}


def measure_same_process(cfgs: dict, steps: int, warmup: int) -> dict:
    """Every variant in this process, steps interleaved so load falls on all alike."""
    built = {name: _build(cfg) for name, cfg in cfgs.items()}
    out = {name: {"seconds": [], "pairs": 0, "calls": []} for name in cfgs}
    for i in range(warmup + steps):
        for name, d in built.items():
            t, pairs, calls = _step(d)
            if i >= warmup:
                out[name]["seconds"].append(t)
                out[name]["pairs"] = pairs
                out[name]["calls"].append(calls)
    peak = _peak_mb()
    return {name: {"seconds": o["seconds"], "pairs": o["pairs"], "teacher_calls": statistics.fmean(o["calls"]),
                   "base_rss_mb": None, "peak_rss_mb": peak} for name, o in out.items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.plan:
        print(plan(args.gpus))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    store, cmd = cli.store_of(args), cli.command("cost.py", argv)
    variants = []
    for spec in args.variant or VARIANTS:
        name, suite, *own = spec.split()
        overrides = [*(SMOKE if args.smoke else []), *args.overrides, *own, f"threads={args.threads}"]
        variants.append((name, Path(suite).stem, own, load_suite(suite, overrides)))
    cfgs = {name: cfg for name, _, _, cfg in variants}
    runs: dict[str, list[dict]] = {name: [] for name in cfgs}
    if args.same_process:
        for name, m in measure_same_process(cfgs, args.steps, args.warmup).items():
            runs[name].append(m)
    else:
        ctx = mp.get_context("spawn")
        for r in range(args.rounds):
            for name, cfg in cfgs.items():
                print(f"round {r + 1}/{args.rounds}: {name}", flush=True)
                with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    runs[name].append(pool.submit(measure, cfg, args.steps, args.warmup, args.threads).result())
    rows = []
    for name, suite, own, _ in variants:
        ms = statistics.median(1000 * statistics.fmean(m["seconds"]) for m in runs[name])
        pairs = runs[name][0]["pairs"]
        peak = max(m["peak_rss_mb"] for m in runs[name])
        rows.append({"name": name, "suite": suite, "overrides": own, "ms_per_step": ms, "pairs_per_step": pairs,
                     "ms_per_pair": ms / max(pairs, 1), "teacher_calls_per_step": runs[name][0]["teacher_calls"],
                     "peak_rss_mb": peak, "base_rss_mb": runs[name][0]["base_rss_mb"], "measurements": runs[name]})
    names = [v[0] for v in variants]
    record = {"key": f"cost|{'|'.join(names)}|smoke={args.smoke}", "label": "cost", "smoke": args.smoke,
              "variants": rows, "steps": args.steps, "warmup": args.warmup,
              "rounds": 1 if args.same_process else args.rounds,
              "threads": args.threads, "isolated": not args.same_process, "manifest": manifest(cmd, configs=cfgs)}
    store.append("cost", record)
    print(tables.cost_section(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
