"""Is the default recipe stable, across seeds and beyond its length? (and why does a fixed route collapse)

Trains each variant (``default``: the embedded default recipe, DistillConfig defaults with a
jittered route; ``fixed``: the same with ``pairs.jitter=false``) from each of ``--seeds`` and
measures the EMA student at step 0, every ``--early-every`` steps up to ``--early-until`` (to
resolve an early collapse), then every ``--eval-every`` steps:

* 1-step FID (digit classifier features against the held-out digits) and prompt adherence, ``--n``
  images per digit from fixed noise seeds, so every point of every curve sees the same noise;
* the mean training loss since the previous point, the mean finite gradient norm, and the
  non-finite (skipped) steps so far;
* a probe of how the student's F varies in t.  A fixed batch (``--probe-n`` per digit, guidance
  4.5) is rolled out by the teacher through the K-1 angles of the reference route the fixed
  variant trains on ("on"), the midpoints between consecutive ones ("between") and pi/2, where the
  1-step sampler evaluates the student.  At each of those states the central finite difference
  ``dF/dt = (F(x, t + h) - F(x, t - h)) / 2h`` (x held fixed; at pi/2 the stencil ends at pi/2) is
  taken, and its RMS over the batch and pixels.  Reported: ``between/on``, the geometric mean over
  the K-2 intervals of RMS(midpoint) / sqrt(RMS(left end) RMS(right end)), and ``pi/2 / on``,
  RMS(pi/2) / RMS(first route angle below pi/2).  The same ratios for the derivative along the
  teacher's flow (x moved by h u with t) are in the JSON (``total_*``), with every angle's RMS.

    python benchmarks/stability.py --parallel 2 --write-results   # the full study, ~25 min on 2 free cores
    python benchmarks/stability.py --quick --parallel 2 --json /tmp/stability.json   # smoke test, < 3 min

Defaults: variants default,fixed; seeds 0,1,2; the default recipe 1800 steps (1.5x the default
run's 1200), the fixed route 600 (its collapse came within ~400 steps in the one-seed comparison);
evaluations at 0, 100, ..., 600, then every 300 steps, 30 images per digit.  The issue asked for
2400 steps (2x) for every run: about 50 minutes on 2 cores, so the defaults are reduced to fit ~25
minutes; ``--variants default --steps 2400`` checks 2x for the default recipe alone (~33 min; with
``--seeds 0,1`` ~17 min).
Measured: one single-threaded run trains ~2.8 steps/s on a core of this machine (~0.36 CPU-s per
step), an evaluation takes ~3 s.

Prints one markdown table per variant; ``--json`` writes everything measured; ``--write-results``
writes docs/img/stability_fid.png and docs/img/stability_dfdt.png and replaces the block between
``<!-- bench:stability:start -->`` and ``<!-- bench:stability:end -->`` in docs/results.md
(appended if absent).  ``--plots DIR`` writes the PNGs to DIR instead (no doc change).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from results_doc import write_block
from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference, adherence
from tbcm.previews import seeded_noise, student_samples
from tbcm.sampling import rollout
from tbcm.trigflow import HALF_PI, reference_route

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
CFG = 4.5
VARIANTS = {"default": [], "fixed": ["pairs.jitter=false"]}
PROBE_SEED = 50_000  # noise of the probe batch (fixed, disjoint from the evaluation seeds 0..n-1)


class RouteProbe:
    """RMS of the student's dF/dt on the reference route, between its angles, and at pi/2.

    The states are the teacher's guided rollout of a fixed batch through the merged route
    ``[pi/2, r_1, m_1, r_2, ..., m_{K-2}, r_{K-1}]`` (``r_i`` the reference angles the fixed route
    trains on, ``m_i`` their midpoints), so every probed state is one the teacher visits at its angle.
    """

    def __init__(self, teacher, encoder, route_points: int, shift: float, per_digit: int, h: float):
        ref = reference_route(route_points, shift)  # [K] float64, ref[0] = pi/2
        on, mids = ref[1:].tolist(), ((ref[1:-1] + ref[2:]) / 2).tolist()
        points = [(HALF_PI, "pi/2")] + [(a, "on") for a in on] + [(a, "between") for a in mids]
        points.sort(key=lambda p: -p[0])
        self.angles = [a for a, _ in points]
        self.kinds = [k for _, k in points]
        self.h = h
        self.sigma_d = teacher.sigma_d
        c = teacher.F.net.config
        noise = seeded_noise(per_digit, 10, (c.in_channels, c.image_size, c.image_size), PROBE_SEED)
        self.cond = encoder.encode(PROMPTS).repeat_interleave(per_digit)
        self.w = torch.full((noise.shape[0],), CFG)
        route = torch.tensor(self.angles, dtype=torch.float64).expand(noise.shape[0], -1)
        with torch.no_grad():
            traj = rollout(lambda x, t: teacher.velocity(x, t, self.cond, self.w), teacher.sigma_d * noise, route)
        self.states, self.velocities = traj.states, traj.velocities  # [A, B, C, H, W]

    @torch.no_grad()
    def measure(self, student) -> dict:
        a, b = len(self.angles), self.states.shape[1]
        h, sd = self.h, self.sigma_d
        centre = torch.tensor([min(t, HALF_PI - h) for t in self.angles], dtype=torch.float32)
        t_c = centre.repeat_interleave(b)  # [A * B]
        x = self.states.flatten(0, 1)
        u = self.velocities.flatten(0, 1)
        shift_t = (t_c - torch.tensor(self.angles, dtype=torch.float32).repeat_interleave(b)).reshape(-1, 1, 1, 1)
        x_c = x + shift_t * u  # the stencil centre (differs from x only at pi/2), first order along the flow
        idx = torch.arange(b).repeat(a)
        cond, w = self.cond.index(idx), self.w[idx]

        def F(xx, tt):
            return student(xx / sd, tt, cond, w)

        partial = (F(x_c, t_c + h) - F(x_c, t_c - h)) / (2 * h)
        total = (F(x_c + h * u, t_c + h) - F(x_c - h * u, t_c - h)) / (2 * h)
        out = {"angles": self.angles, "kinds": self.kinds}
        for name, d in (("partial", partial), ("total", total)):
            rms = d.reshape(a, b, -1).pow(2).mean(dim=(1, 2)).sqrt().tolist()
            out[f"{name}_rms"] = rms
            out[f"{name}_between_on"], out[f"{name}_pi2_on"] = self._ratios(rms)
        return out

    def _ratios(self, rms: list[float]) -> tuple[float, float]:
        logs = []
        for i, kind in enumerate(self.kinds):
            if kind == "between":  # neighbours in the merged (sorted) list are the two route angles
                left, right = rms[i - 1], rms[i + 1]
                ratio = rms[i] / math.sqrt(left * right) if left * right > 0 else float("nan")
                logs.append(math.log(ratio) if ratio > 0 else float("nan"))
        first_on = self.kinds.index("on")
        pi2 = rms[self.kinds.index("pi/2")] / rms[first_on] if rms[first_on] > 0 else float("nan")
        return float(math.exp(np.mean(logs))), pi2


def _scores(student, encoder, n: int, ref: FIDReference, clf) -> tuple[float, float]:
    images = torch.cat([student_samples(student, encoder, [p], CFG, 1, n, first_seed=0) for p in PROMPTS])
    labels = torch.arange(10).repeat_interleave(n)
    if not torch.isfinite(images).all():  # a diverged student: score it, do not stop the study
        images = images.nan_to_num(0.0, 1.0, -1.0)
    try:
        return ref(images), adherence(images, labels, clf)
    except (ValueError, RuntimeError):
        return float("nan"), adherence(images, labels, clf)


def eval_steps(steps: int, every: int, early_every: int, early_until: int) -> set[int]:
    """Step 0, every ``early_every`` steps up to ``early_until``, every ``every`` steps, and the last."""
    out = {0, steps, *range(every, steps, every)}
    if early_every > 0:
        out |= set(range(early_every, min(early_until, steps) + 1, early_every))
    return out


def train_job(variant: str, seed: int, steps: int, evals: set[int], n: int, probe_n: int, probe_h: float,
              threads: int) -> dict:
    """One (variant, seed) run; in its own process under --parallel. Returns the curve."""
    torch.set_num_threads(threads)
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    cfg = load_config(DistillConfig, None, [f"seed={seed}", f"steps={steps}", f"threads={threads}",
                                            *VARIANTS[variant]])
    d = Distiller(cfg)
    probe = RouteProbe(d.teacher, d.encoder, cfg.pairs.route_points, cfg.pairs.shift, probe_n, probe_h)
    points, losses, norms = [], [], []
    train_wall = train_cpu = eval_wall = 0.0
    tag = f"{variant} seed {seed}"
    while True:
        if d.step in evals:
            start = time.perf_counter()
            student = d.student_for_sampling()
            fid, adh = _scores(student, d.encoder, n, ref, clf)
            pr = probe.measure(student)
            eval_wall += time.perf_counter() - start
            finite = [v for v in losses if math.isfinite(v)]
            points.append({"step": d.step, "fid": fid, "adherence": adh, "skipped": d.skipped,
                           "loss": float(np.mean(finite)) if finite else float("nan"),
                           "grad_norm": float(np.mean([g for g in norms if math.isfinite(g)] or [float("nan")])),
                           "train_s": train_wall, "probe": pr})
            losses, norms = [], []
            print(f"[{tag}] step {d.step:5d}  FID {fid:8.2f}  adherence {adh:6.1%}  "
                  f"dF/dt between/on {pr['partial_between_on']:.3f}  pi/2/on {pr['partial_pi2_on']:.3f}  "
                  f"loss {points[-1]['loss']:.4f}  skipped {d.skipped}", flush=True)
        if d.step >= steps:
            break
        w0, c0 = time.perf_counter(), time.process_time()
        stats = d.train_step()
        train_wall += time.perf_counter() - w0
        train_cpu += time.process_time() - c0
        losses.append(float(stats["loss"]))
        norms.append(float(stats["grad_norm"]))
    return {"variant": variant, "seed": seed, "points": points, "skipped": d.skipped, "train_s": train_wall,
            "train_cpu_s": train_cpu, "eval_s": eval_wall, "steps_per_s": steps / max(train_wall, 1e-9),
            "threads": threads}


def run_jobs(jobs: list[tuple[str, int, int]], args) -> list[dict]:
    """``jobs``: (variant, seed, steps); submitted longest first, results in the order given."""
    ctx = mp.get_context("spawn")
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][2])
    with cf.ProcessPoolExecutor(max_workers=args.parallel, mp_context=ctx) as pool:
        futures = {i: pool.submit(train_job, v, s, n, eval_steps(n, args.eval_every, args.early_every,
                                                                  args.early_until),
                                  args.n, args.probe_n, args.probe_h, args.threads)
                   for i, (v, s, n) in ((i, jobs[i]) for i in order)}
        return [futures[i].result() for i in range(len(jobs))]


def _ms(values: list[float], fmt: str = "{:.2f}") -> str:
    """``mean ± std`` (sample std; the value alone for one run)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(float(np.mean(vals)))} ± {fmt.format(float(np.std(vals, ddof=1)))}"


def tables(results: list[dict], variants: list[str], seeds: list[int]) -> list[str]:
    lines = []
    for v in variants:
        runs = {r["seed"]: r for r in results if r["variant"] == v}
        steps = [p["step"] for p in runs[seeds[0]]["points"]]
        seed_cols = " | ".join(f"FID seed {s}" for s in seeds)
        what = " ".join(VARIANTS[v]) or "DistillConfig defaults"
        lines += [f"Variant `{v}` ({what}):", "",
                  (f"| step | {seed_cols} | FID mean ± std | adherence | dF/dt between/on | dF/dt pi/2 / on | "
                   "loss | skipped |"), "|---" * (len(seeds) + 7) + "|"]
        for i, step in enumerate(steps):
            pts = [runs[s]["points"][i] for s in seeds]
            lines.append(
                f"| {step} | " + " | ".join(f"{p['fid']:.2f}" for p in pts)
                + f" | {_ms([p['fid'] for p in pts])} | {_ms([p['adherence'] for p in pts], '{:.1%}')}"
                f" | {_ms([p['probe']['partial_between_on'] for p in pts], '{:.3f}')}"
                f" | {_ms([p['probe']['partial_pi2_on'] for p in pts], '{:.3f}')}"
                f" | {'' if i == 0 else _ms([p['loss'] for p in pts], '{:.4f}')}"
                f" | {sum(p['skipped'] for p in pts)} |")
        lines.append("")
    lines += ["Per run:", "", ("| variant | seed | final FID | best FID (step) | final adherence | skipped steps | "
                               "steps / s | threads |"), "|---|---|---|---|---|---|---|---|"]
    for r in results:
        best = min(r["points"], key=lambda p: p["fid"])
        last = r["points"][-1]
        lines.append(f"| {r['variant']} | {r['seed']} | {last['fid']:.2f} | {best['fid']:.2f} ({best['step']}) | "
                     f"{last['adherence']:.1%} | {r['skipped']} | {r['steps_per_s']:.2f} | {r['threads']} |")
    return lines


def plot(results: list[dict], variants: list[str], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r["seed"] for r in results})
    paths = []

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for r in results:
        ax.plot([p["step"] for p in r["points"]], [p["fid"] for p in r["points"]], marker="o", ms=3,
                ls=styles[seeds.index(r["seed"]) % len(styles)], color=colours[r["variant"]],
                label=f"{r['variant']}, seed {r['seed']}")
    ax.set(xlabel="training step", ylabel="1-step FID (digit features)", yscale="log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(folder / "stability_fid.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels_ = [("partial_between_on", "dF/dt (x fixed): between route angles / on them"),
               ("partial_pi2_on", "dF/dt (x fixed): at pi/2 / first route angle"),
               ("total_between_on", "dF/dt along the teacher flow: between / on"),
               ("total_pi2_on", "dF/dt along the teacher flow: pi/2 / first route angle")]
    for ax, (key, title) in zip(axes.flat, panels_):
        for r in results:
            ax.plot([p["step"] for p in r["points"]], [p["probe"][key] for p in r["points"]], marker="o", ms=3,
                    ls=styles[seeds.index(r["seed"]) % len(styles)], color=colours[r["variant"]],
                    label=f"{r['variant']}, seed {r['seed']}")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set(ylabel="RMS ratio", yscale="log", title=title)
        ax.title.set_fontsize(9)
    for ax in axes[1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(folder / "stability_dfdt.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


STUDY = ("Full study: python benchmarks/stability.py --parallel 2 --write-results (about 25 minutes on 2 free "
         "cores). Its defaults are reduced from the issue's 2400 steps (2x the default run) for every run, "
         "which would take about 50 minutes: the default recipe trains 1800 steps (1.5x) and the fixed route, "
         "whose collapse came within about 400 steps in the single-seed comparison, 600 steps. "
         "`--variants default --steps 2400` checks 2x for the default recipe alone (about 33 minutes; with "
         "`--seeds 0,1` about 17); "
         "`--fixed-steps 0` gives the fixed route the same length as --steps.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=STUDY)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: seed 0, 200 steps for both variants, evaluation at 0, 50, ..., 200, n 10 (< 3 min)")
    ap.add_argument("--variants", default="default,fixed", help=f"comma list of {', '.join(VARIANTS)} (default: both)")
    ap.add_argument("--seeds", help="comma list of training seeds (default 0,1,2; quick 0)")
    ap.add_argument("--steps", type=int, help="optimiser steps of each default-recipe run (default 1800 = 1.5x the "
                                              "1200 of the default run, not 2x, to fit ~25 min; quick 200)")
    ap.add_argument("--fixed-steps", type=int, help="optimiser steps of each fixed-route run (default 600; "
                                                    "0 = --steps; quick: --steps)")
    ap.add_argument("--eval-every", type=int, help="steps between evaluations (default 300; quick 100)")
    ap.add_argument("--early-every", type=int, help="denser evaluations early on, every this many steps "
                                                    "(default 100; quick 50; 0 = off) ...")
    ap.add_argument("--early-until", type=int, help="... up to this step (default 600; quick 200)")
    ap.add_argument("--n", type=int, help="images per digit for FID and adherence (default 30; quick 10)")
    ap.add_argument("--probe-n", type=int, default=4, help="probe states per digit for dF/dt (default 4)")
    ap.add_argument("--probe-h", type=float, default=1e-3, help="finite-difference step in t, radians (default 1e-3)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at once, each in its own process (2 on 2 cores)")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: 2 // parallel, at least 1)")
    ap.add_argument("--json", type=Path, help="write everything measured here")
    ap.add_argument("--plots", type=Path, help="write the PNGs into this folder (no doc change)")
    ap.add_argument("--write-results", action="store_true",
                    help="write docs/img/stability_*.png and the marked block of docs/results.md")
    args = ap.parse_args()
    q = args.quick
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        ap.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in (args.seeds or ("0" if q else "0,1,2")).split(",") if s.strip()]
    args.steps = args.steps or (200 if q else 1800)
    if args.fixed_steps is None:
        args.fixed_steps = args.steps if q else 600
    args.fixed_steps = args.fixed_steps or args.steps
    args.eval_every = args.eval_every or (100 if q else 300)
    if args.early_every is None:
        args.early_every = 50 if q else 100
    args.early_until = args.early_until if args.early_until is not None else (200 if q else 600)
    args.n = args.n or (10 if q else 30)
    args.parallel = max(1, args.parallel)
    args.threads = args.threads or max(1, 2 // args.parallel)
    if min(args.n, args.steps, args.fixed_steps, args.eval_every, args.probe_n) < 1 or not seeds:
        ap.error("--n, --steps, --fixed-steps, --eval-every, --probe-n and --seeds must be positive / non-empty")

    t0 = time.perf_counter()
    length = {"default": args.steps, "fixed": args.fixed_steps}
    jobs = [(v, s, length[v]) for s in seeds for v in variants]
    print(f"{len(jobs)} runs ({', '.join(f'{v}: {length[v]} steps' for v in variants)}; seeds {seeds}), "
          f"{args.parallel} at once, {args.threads} thread(s) each", flush=True)
    results = run_jobs(jobs, args)
    wall = time.perf_counter() - t0

    command = "python benchmarks/stability.py" + "".join(f" {a}" for a in sys.argv[1:])
    header = (f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
              f"torch {torch.__version__}; {args.parallel} run(s) at once, {args.threads} thread(s) each. "
              f"Date: {datetime.date.today()}. Seeds {', '.join(map(str, seeds))}; steps per run: "
              f"{', '.join(f'{v} {length[v]}' for v in variants)} (the default run is 1200). The EMA student is "
              f"evaluated at the listed steps: 1-step FID and adherence from {args.n} images per digit (the same "
              f"noise at every point), guidance input {CFG}. dF/dt: RMS of the central difference in t "
              f"(h = {args.probe_h:g} rad, x fixed) of the EMA student's F on {10 * args.probe_n} fixed "
              f"teacher-trajectory states at each angle; between/on = geometric mean over the intervals of the "
              f"reference route of RMS at the midpoint / RMS at its two ends; pi/2 / on = RMS at pi/2 / RMS at the "
              f"first route angle below it. Loss: mean over the steps since the previous point; skipped: "
              f"non-finite steps so far, summed over seeds.")
    lines = [header, "", *tables(results, variants, seeds), "",
             "![1-step FID against training step](img/stability_fid.png)",
             "![dF/dt ratios against training step](img/stability_dfdt.png)", "",
             f"Benchmark wall time: {wall:.0f} s."]
    text = "\n".join(lines)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "wall_s": wall, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": results}, indent=1))
    if args.plots:
        plot(results, variants, args.plots)
    if args.write_results:
        plot(results, variants, ROOT / "docs" / "img")
        write_block("stability", text)


if __name__ == "__main__":
    main()
