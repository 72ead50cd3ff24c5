"""The paper's comparison of pair sources, and its ablations, as one benchmark on this machine.

Every variant starts from the same student initialisation and uses the same objective; only the
pairs differ.  Each trains for the same wall-clock budget (evaluation time is not counted),
evaluating the EMA student at 1 step (FID on the digit classifier's features against the
held-out digits, and prompt adherence) every ``--eval-every`` seconds of training.

* sources: ``trajectory`` (TBCM), ``forward`` (real digits, sCM / Sana-Sprint), ``teacher_x0``;
* ablations of the trajectory: route length K=8 (vs 16), a fixed route (vs jittered), a random
  subset of 4 points per trajectory (vs all 15);
* the teacher at 4, 8, 16, 32 guided steps, and the 1-step student's speed-up in images/s over
  the teacher at 16 steps.

    python benchmarks/compare_sources.py            # ~20 minutes on 2 cores
    python benchmarks/compare_sources.py --quick    # smoke test, < 5 minutes

Writes the tables into docs/results.md (between the benchmark's markers) and PNG plots into
docs/img/; prints the tables too.  Equal teacher forwards: each curve's FID is interpolated at
the smallest final teacher-call count over the three sources.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from results_doc import write_block
from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference, adherence
from tbcm.grids import grid_image, panels, save_png
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.previews import student_samples, teacher_samples

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
CFG = 4.5
SOURCES = [("trajectory (TBCM)", []), ("forward (sCM baseline)", ["source=forward"]),
           ("teacher_x0", ["source=teacher_x0"])]
ABLATIONS = [("K=8", ["pairs.route_points=8"]), ("fixed route", ["pairs.jitter=false"]),
             ("4 of 15 points", ["pairs.points_per_trajectory=4"])]


def _scores(student, encoder, n: int, ref: FIDReference, clf) -> tuple[float, float]:
    images = torch.cat([student_samples(student, encoder, [p], CFG, 1, n, first_seed=0) for p in PROMPTS])
    labels = torch.arange(10).repeat_interleave(n)
    return ref(images), adherence(images, labels, clf)


def train_variant(overrides: list[str], budget_s: float, eval_every_s: float, n: int, threads: int) -> dict:
    """Runs in a fresh process (so its peak memory is its own). Returns the curve and timings."""
    torch.set_num_threads(threads)
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    d = Distiller(load_config(DistillConfig, None, ["steps=1000000", f"threads={threads}", *overrides]))
    curve, trained, steps_time, pairs = [], 0.0, [], 0
    next_eval = 0.0
    while trained < budget_s:
        if trained >= next_eval:
            fid, adh = _scores(d.student_for_sampling(), d.encoder, n, ref, clf)
            curve.append({"seconds": trained, "step": d.step, "teacher_calls": int(d.source.teacher_calls),
                          "fid": fid, "adherence": adh})
            next_eval += eval_every_s
        start = time.perf_counter()
        stats = d.train_step()
        dt = time.perf_counter() - start
        trained += dt
        steps_time.append(dt)
        pairs += stats["pairs"]
    student = d.student_for_sampling()
    fid, adh = _scores(student, d.encoder, n, ref, clf)
    curve.append({"seconds": trained, "step": d.step, "teacher_calls": int(d.source.teacher_calls), "fid": fid,
                  "adherence": adh})
    grid = student_samples(student, d.encoder, PROMPTS, CFG, 1, 6)
    return {"curve": curve, "step_s": float(np.median(steps_time[5:] or steps_time)), "pairs_per_s": pairs / trained,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "grid": grid}


def run_variants(variants, args) -> dict:
    out = {}
    ctx = mp.get_context("spawn")
    for name, overrides in variants:
        print(f"training: {name} ({args.budget:.0f} s)", flush=True)
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            out[name] = pool.submit(train_variant, overrides, args.budget, args.eval_every, args.n,
                                    args.threads).result()
    return out


def fid_at_calls(curve: list[dict], calls: float) -> float:
    xs = [c["teacher_calls"] for c in curve]
    return float(np.interp(calls, xs, [c["fid"] for c in curve]))


def teacher_rows(n: int) -> tuple[list[tuple], float]:
    teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    labels = torch.arange(10).repeat_interleave(n)
    rows, t16 = [], 0.0
    for steps in (4, 8, 16, 32):
        start = time.perf_counter()
        images = torch.cat([teacher_samples(teacher, [p], CFG, steps, n) for p in PROMPTS])
        elapsed = time.perf_counter() - start
        if steps == 16:
            t16 = images.shape[0] / elapsed
        rows.append((steps, ref(images), adherence(images, labels, clf)))
    return rows, t16


def student_images_per_s(n: int) -> float:
    """1-step student throughput, timed on the same prompts and batch as the teacher."""
    from tbcm.models.student import Student

    teacher = load_bundle("builtin", expect_kind="teacher")
    student = Student(teacher.network.with_guidance_embed(), teacher.meta.sigma_d).eval()  # same cost as trained
    start = time.perf_counter()
    images = torch.cat([student_samples(student, teacher.encoder, [p], CFG, 1, n) for p in PROMPTS])
    return images.shape[0] / (time.perf_counter() - start)


def plot_curves(results: dict, path: Path, key: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, res in results.items():
        ax.plot([c[key] for c in res["curve"]], [c["fid"] for c in res["curve"]], "o-", ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel="1-step FID (digit features)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs, small evaluations (< 5 minutes)")
    ap.add_argument("--budget", type=float, help="training seconds per source (default 240; quick 20)")
    ap.add_argument("--ablation-budget", type=float, help="training seconds per ablation (default 120; quick 15)")
    ap.add_argument("--eval-every", type=float, help="seconds of training between evaluations (default 30)")
    ap.add_argument("--n", type=int, help="images per digit for FID and adherence (default 50; quick 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    q = args.quick
    args.budget = args.budget or (20.0 if q else 240.0)
    args.ablation_budget = args.ablation_budget or (15.0 if q else 120.0)
    args.eval_every = args.eval_every or (10.0 if q else 30.0)
    args.n = args.n or (20 if q else 50)
    t0 = time.perf_counter()

    sources = run_variants(SOURCES, args)
    budget = args.budget
    args.budget = args.ablation_budget
    ablations = run_variants([(f"trajectory, {n}", o) for n, o in ABLATIONS], args)
    args.budget = budget
    t_rows, teacher_ips = teacher_rows(args.n)
    student_ips = student_images_per_s(args.n)
    teacher16 = dict((s, f) for s, f, _ in t_rows)[16]

    calls = min(res["curve"][-1]["teacher_calls"] for res in sources.values())
    lines = [f"Command: `python benchmarks/compare_sources.py{' --quick' if q else ''}`. Machine: "
             f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
             f"Date: {datetime.date.today()}. FID and adherence of the 1-step EMA student, {args.n} images "
             f"per digit, guidance input {CFG}; FID on the digit classifier's features against the "
             f"{digits_split().heldout_images.shape[0]} held-out digits.", "",
             f"Pair sources, same wall-clock ({args.budget:.0f} s of training each) and same teacher "
             f"forwards ({calls} guided calls, FID interpolated on each curve):", "",
             "| source | FID, equal time | adherence, equal time | FID, equal teacher calls | steps | "
             "s / step | pairs / s | teacher calls | peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for name, res in sources.items():
        last = res["curve"][-1]
        lines.append(f"| {name} | {last['fid']:.2f} | {last['adherence']:.1%} | {fid_at_calls(res['curve'], calls):.2f} "
                     f"| {last['step']} | {res['step_s']:.3f} | {res['pairs_per_s']:.0f} | {last['teacher_calls']} | "
                     f"{res['peak_mb']:.0f} |")
    lines += ["", f"Ablations of the trajectory source ({args.ablation_budget:.0f} s of training each; compare "
              f"with the trajectory curve at that time in the plot):", "",
              "| variant | FID | adherence | steps | pairs / s |", "|---|---|---|---|---|"]
    for name, res in ablations.items():
        last = res["curve"][-1]
        lines.append(f"| {name} | {last['fid']:.2f} | {last['adherence']:.1%} | {last['step']} | "
                     f"{res['pairs_per_s']:.0f} |")
    traj = sources["trajectory (TBCM)"]["curve"]
    ref_fid = float(np.interp(args.ablation_budget, [c["seconds"] for c in traj], [c["fid"] for c in traj]))
    lines.append(f"| trajectory, K=16, jittered, all points (at {args.ablation_budget:.0f} s, interpolated) | "
                 f"{ref_fid:.2f} | | | |")
    lines += ["", "Teacher, guided (cfg 4.5):", "", "| steps | FID | adherence |", "|---|---|---|"]
    lines += [f"| {s} | {f:.2f} | {a:.1%} |" for s, f, a in t_rows]
    traj_last = sources["trajectory (TBCM)"]["curve"][-1]
    lines += ["", f"1-step student / teacher at 16 steps: FID ratio {traj_last['fid'] / teacher16:.2f} "
              f"(target <= 1.5), adherence ratio {traj_last['adherence'] / dict((s, a) for s, _, a in t_rows)[16]:.2f}"
              f" (target >= 0.95); speed {student_ips:.0f} vs {teacher_ips:.0f} images/s = "
              f"{student_ips / teacher_ips:.1f}x.", "",
              "![FID against training time](img/sources_fid_vs_time.png)",
              "![FID against teacher calls](img/sources_fid_vs_calls.png)",
              "![1-step samples per source](img/sources_samples.png)", "",
              f"Benchmark wall time: {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        everything = {**sources, **ablations}
        plot_curves(everything, img / "sources_fid_vs_time.png", "seconds", "training time (s)")
        plot_curves(sources, img / "sources_fid_vs_calls.png", "teacher_calls", "guided teacher calls")
        save_png(panels([(name, grid_image(res["grid"], 10)) for name, res in everything.items()]),
                 img / "sources_samples.png")
        write_block("compare_sources", text)


if __name__ == "__main__":
    main()
