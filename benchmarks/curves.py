"""Training curves: FID, fidelity to the teacher and the spectrum ratio against training steps, so
a user sees how long to train. Trains a pinned suite on a split's training seeds with a checkpoint
every ``--every`` steps, scores each checkpoint's EMA student at 1, 2 and 4 steps on the split's
draws, stores one record per seed (the store's ``curves`` table) and plots (mean over seeds, thin
lines per seed) FID against training steps and seconds, and below, the paired latent error to the
teacher as copied (``latent_mse``) and the spectrum ratio of the highest of four frequency bands
(1 = the teacher's; the target band 0.8-1.25 shaded) against steps.

Curves are for choosing a budget: they run on ``--split tune`` unless told. Each point holds the
student's FID and adherence and, with ``--fidelity`` (the default), its data-free fidelity to the
teacher as copied per step count (``score_run(teacher=True)``'s ``"fidelity"``: ``latent_mse``,
``label_agreement``, ``fid_to_teacher``, ``spectrum_ratio`` per band low to high, ...; means over
the draws). The teacher's images are the same at every checkpoint, so they are sampled once per
seed and draw and kept across the checkpoints (``score_run(teacher_samples=)``); only the judge's
scores of them are computed again at each point (cheap). ``--no-fidelity`` scores the students alone,
as before.

The digits default, its plot for docs/img (about an hour per seed on 2 cores, as measured without
the fidelity; the fidelity adds one teacher rollout per seed and draw, and a judge pass per point):

    python benchmarks/curves.py --suite digits_default --every 400 --png docs/img/curves_digits_default.png

Others:

    python benchmarks/curves.py --suite digits_paper --every 400 --png docs/img/curves_digits_paper.png
    python benchmarks/curves.py --suite digits_default --every 400 --no-fidelity    # the students alone
    python benchmarks/curves.py --suite digits_default --smoke                     # the pipeline, in seconds
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `benchmarks.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cli, runner, tables  # noqa: E402
from benchmarks.harness.score import score_run  # noqa: E402
from benchmarks.harness.store import ROOT, manifest  # noqa: E402
from tbcm.evaluation import splits  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits_default", help="a pinned suite (benchmarks/suites/NAME.yaml)")
    ap.add_argument("--split", choices=splits.SPLITS, default="tune")
    ap.add_argument("--every", type=int, default=400, help="training steps between scored checkpoints")
    ap.add_argument("--seeds", type=int, default=None, help="the split's first N training seeds (default all)")
    ap.add_argument("--draws", type=int, default=1, help="evaluation draws 0..N-1 per point (default 1)")
    ap.add_argument("--n", type=int, default=None, help="images per class (default: the judge's)")
    ap.add_argument("--steps", default="1,2,4", help="student step counts")
    ap.add_argument("--png", default=None,
                    help="the plot (default docs/img/curves_SUITE_SPLIT.png, SUITE with the row's overrides or --name; with --smoke, in RUNS)")
    ap.add_argument("--name", default=None, help="the row's name (default: the suite and its --set overrides)")
    ap.add_argument("--fidelity", action=argparse.BooleanOptionalAction, default=True,
                    help="also score each point's fidelity to the teacher as copied and its spectrum ratio "
                         "(default; --no-fidelity: the students' FID and adherence alone)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.n, args.every = args.seeds or 1, args.n or 2, min(args.every, 3)
    return args


def _panel(ax, rows: list[dict], counts: list[str], x: str, metric: str) -> None:
    """``metric`` against ``x`` (``"step"`` or ``"seconds"``), one colour per student step count: a
    thin line per seed and a thick one of the mean over seeds, over the points that have it."""
    steps = sorted({p["step"] for r in rows for p in r["points"]})
    for i, k in enumerate(counts):
        def value(p: dict) -> float | None:
            return tables.curve_value(p, metric, k)

        for r in rows:
            pts = [p for p in r["points"] if value(p) is not None]
            ax.plot([p[x] for p in pts], [value(p) for p in pts], color=f"C{i}", lw=0.6, alpha=0.5)
        at = [ps for ps in ([p for r in rows for p in r["points"] if p["step"] == s and value(p) is not None]
                            for s in steps) if ps]
        ax.plot([statistics.fmean(p[x] for p in ps) for ps in at], [statistics.fmean(map(value, ps)) for ps in at],
                color=f"C{i}", lw=2, label=tables.steps_word(k))
    ax.set_xlabel("training step" if x == "step" else "training seconds")
    ax.grid(alpha=0.3)


def _log_y(ax, within: tuple[float, float] | None = None) -> None:
    """A log y axis read in plain numbers (1, 2, 5 per decade; every tick on a short span), its
    limits widened to ``within`` if given."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if within:
        low, high = min(low, within[0]), max(high, within[1])
        ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(LogLocator(subs=tuple(range(1, 10))))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if high / low < 4 else NullFormatter())


def plot(rows: list[dict], png: Path, title: str) -> None:
    """FID against training steps and seconds; with fidelity in the records, below them the paired
    latent error to the teacher as copied and the spectrum ratio of the highest band against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({k for r in rows for p in r["points"] for k in p["student"]}, key=int)
    fidelity = any(p.get("fidelity") for r in rows for p in r["points"])
    fig, axes = plt.subplots(2 if fidelity else 1, 2, figsize=(10, 7.4 if fidelity else 3.8), squeeze=False)
    copied = [r["teacher_as_copied"]["fid"] for r in rows if r.get("teacher_as_copied")]
    for ax, x in zip(axes[0], ("step", "seconds")):
        _panel(ax, rows, counts, x, "fid")
        if copied:
            ax.axhline(statistics.fmean(copied), color="0.4", ls=":", lw=1.2, label="teacher as copied")
        ax.set_ylabel("FID")
    axes[0][0].legend()
    if fidelity:
        mse, band = axes[1]
        _panel(mse, rows, counts, "step", "latent_mse")
        mse.set_ylabel("latent MSE to the teacher as copied\n(paired, / sigma_d^2)")
        values = [v for v in (tables.curve_value(p, "latent_mse", k) for r in rows for p in r["points"]
                              for k in counts) if v is not None]
        if values and min(values) > 0:  # it spans decades as training goes
            _log_y(mse)
        _panel(band, rows, counts, "step", "top_band")
        band.axhspan(0.8, 1.25, color="C2", alpha=0.12, lw=0, label="target 0.8-1.25")
        band.axhline(1.0, color="k", ls="--", lw=0.9)
        band.set_ylabel("spectrum ratio to the teacher,\nhighest band (1 = the teacher's)")
        _log_y(band, (0.7, 1.4))  # a ratio: 0.5 and 2 equally far from 1; the target band always in view
        band.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _point_words(point: dict) -> str:
    """``1 step FID 12.34, latent MSE 0.0123, top band 1.05; 2 steps ...`` (the fidelity if scored)."""
    out = []
    for k, scores in point["student"].items():
        words = f"{tables.steps_word(k)} FID {scores['fid']:.2f}"
        if k in point.get("fidelity", {}):
            f = point["fidelity"][k]
            words += f", latent MSE {f['latent_mse']:.3g}, top band {f['spectrum_ratio'][-1]:.2f}"
        out.append(words)
    return "; ".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    store, cmd, name, overrides = cli.start(args, "curves.py", argv)
    draws, steps = list(range(args.draws)), cli.ints(args.steps)
    # one plot per row: a row with overrides (or --name) gets its own file, not the suite's
    stem = Path(args.suite).stem if name == cli.label(args.suite, []) else re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")
    png = Path(args.png) if args.png else (Path(args.runs) / f"curves_{stem}_{args.split}.png" if args.smoke else
                                           ROOT / "docs" / "img" / f"curves_{stem}_{args.split}.png")
    png = png.resolve()
    shown = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    for seed in splits.train_seeds(args.split)[:args.seeds]:
        run = runner.plan_run(args.suite, args.split, seed, args.runs, overrides, args.threads, args.every)
        print(f"[{name}] seed {seed}: {'trained before' if runner.is_done(run) else 'training'} -> {run.dir}",
              flush=True)
        d = runner.train(run)
        points, copied = [], None
        teacher_samples: dict = {}  # the teacher as copied, sampled at the first point and kept for the others
        for point in runner.checkpoint_students(run, d):
            score = score_run(point["dir"], args.split, draws, steps, args.n, teacher=args.fidelity,
                              teacher_samples=teacher_samples, device=args.eval_device)
            entry = {"step": point["step"], "seconds": point["seconds"], "student": score["student"]}
            if args.fidelity:
                entry["fidelity"] = score["fidelity"]
                copied = score["teacher_as_copied"]
            points.append(entry)
            print(f"  step {point['step']}: {_point_words(entry)}", flush=True)
        record = {"key": f"curve|{name}|{args.split}|seed={seed}", "label": name, "suite": stem,
                  "split": args.split, "smoke": args.smoke, "train_seed": seed, "every": args.every,
                  "draws": draws, "n_per_class": score["n_per_class"], "run": str(run.dir),
                  "config_hash": run.hash, "fidelity": args.fidelity, "points": points, "png": shown,
                  "manifest": manifest(cmd, config=run.cfg)}
        if copied is not None:  # the same at every point: its setting and scores, once
            record["teacher_as_copied"] = copied
        store.append("curves", record)
    rows = [r for r in store.latest("curves") if r["label"] == name and r["split"] == args.split]
    plot(rows, png, f"{name}, {args.split} split: against training (thick: mean over seeds; thin: each seed)")
    print(tables.curves_section(rows, name, args.split))
    print(f"plot: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
