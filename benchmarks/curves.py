"""FID against training steps: train a pinned suite on a split's training seeds with a checkpoint
every ``--every`` steps, score each checkpoint's EMA student at 1, 2 and 4 steps on the split's
draws, store one record per seed (``curves.jsonl``) and plot FID against training steps and
seconds (mean over seeds, thin lines per seed).

Curves are for choosing a budget: they run on ``--split tune`` unless told. The students alone are
scored (FID, adherence): the teacher's images would be the same at every checkpoint.

    python benchmarks/curves.py --suite digits_default --every 400 --draws 1      # ~1 h per seed on 2 cores
    python benchmarks/curves.py --suite digits_paper --every 400 --png docs/img/curves_digits_paper.png
    python benchmarks/curves.py --suite digits_default --smoke
"""

from __future__ import annotations

import argparse
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
                    help="the plot (default docs/img/curves_SUITE_SPLIT.png; with --smoke, in RUNS)")
    ap.add_argument("--name", default=None, help="the row's name (default: the suite and its --set overrides)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.n, args.every = args.seeds or 1, args.n or 2, min(args.every, 3)
    return args


def plot(rows: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({k for r in rows for p in r["points"] for k in p["student"]}, key=int)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, x in zip(axes, ("step", "seconds")):
        for i, k in enumerate(counts):
            color = f"C{i}"
            for r in rows:
                ax.plot([p[x] for p in r["points"]], [p["student"][k]["fid"] for p in r["points"]], color=color,
                        lw=0.6, alpha=0.5)
            steps = sorted({p["step"] for r in rows for p in r["points"]})
            pts = [[p for r in rows for p in r["points"] if p["step"] == s] for s in steps]
            ax.plot([statistics.fmean(p[x] for p in ps) for ps in pts],
                    [statistics.fmean(p["student"][k]["fid"] for p in ps) for ps in pts],
                    color=color, lw=2, label=f"{k} step{'s' if k != '1' else ''}")
        ax.set_xlabel("training step" if x == "step" else "training seconds")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("FID")
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    store, cmd, name, overrides = cli.start(args, "curves.py", argv)
    draws, steps = list(range(args.draws)), cli.ints(args.steps)
    stem = Path(args.suite).stem
    png = Path(args.png) if args.png else (Path(args.runs) / f"curves_{stem}_{args.split}.png" if args.smoke else
                                           ROOT / "docs" / "img" / f"curves_{stem}_{args.split}.png")
    png = png.resolve()
    shown = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    for seed in splits.train_seeds(args.split)[:args.seeds]:
        run = runner.plan_run(args.suite, args.split, seed, args.runs, overrides, args.threads, args.every)
        print(f"[{name}] seed {seed}: {'trained before' if runner.is_done(run) else 'training'} -> {run.dir}",
              flush=True)
        d = runner.train(run)
        points = []
        for point in runner.checkpoint_students(run, d):
            score = score_run(point["dir"], args.split, draws, steps, args.n, teacher=False)
            points.append({"step": point["step"], "seconds": point["seconds"], "student": score["student"]})
            fids = ", ".join(f"{k} steps {s['fid']:.2f}" for k, s in score["student"].items())
            print(f"  step {point['step']}: FID {fids}", flush=True)
        store.append("curves", {"key": f"curve|{name}|{args.split}|seed={seed}", "label": name, "suite": stem,
                                "split": args.split, "smoke": args.smoke, "train_seed": seed, "every": args.every,
                                "draws": draws, "n_per_class": score["n_per_class"], "run": str(run.dir),
                                "config_hash": run.hash, "points": points, "png": shown,
                                "manifest": manifest(cmd, config=run.cfg)})
    rows = [r for r in store.latest("curves") if r["label"] == name and r["split"] == args.split]
    plot(rows, png, f"{name}, {args.split} split: FID against training (thin: each seed)")
    print(tables.curves_section(rows, name, args.split))
    print(f"plot: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
