"""Quality of a pinned suite: train it on the training seeds of a split, score each student at 1, 2
and 4 steps on that split's evaluation draws (with the teacher as copied, fidelity to it and the
data floor), and score the teacher at its best on the same draws.

The teacher at its best is chosen **once per teacher**: its grid (``--best-steps``, ``--best-shift``,
``--best-cfg``, ``--best-interval``; ~30 min on one CPU thread for the digits at ``--best-n 100``)
runs on tune draw ``--best-draw`` and becomes a ``teacher_best`` record; every later call with the
same teacher files, grid, sampler, tune draw and ``--best-n`` reuses that record (``--rechoose-best``
runs the grid again), and only the chosen setting is scored on this split's draws.

Every choice (a recipe, a sampler, the teacher's best setting) is made on ``--split tune``; the
reported figures come from ``--split confirm`` (docs/results.md: ``python benchmarks/report.py``).
Each student becomes one record of the results store (``quality.jsonl``) with its manifest, each
suite a ``teacher`` record (the teacher at its best and as copied on the same draws); a run already
trained with the same config is not trained again.

    python benchmarks/quality.py --suite digits_default --split tune            # choose here
    python benchmarks/quality.py --suite digits_default --split confirm --seeds 3 --draws 5
    python benchmarks/quality.py --suite scenes_default --split confirm --n 16
    python benchmarks/quality.py --suite digits_default --split tune --set objective.endpoint.weight=0.3
    python benchmarks/quality.py --suite digits_default --smoke                 # a minute or two on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `benchmarks.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cli, runner, score, tables  # noqa: E402
from benchmarks.harness.store import manifest  # noqa: E402
from tbcm.errors import UserError  # noqa: E402
from tbcm.evaluation import splits  # noqa: E402
from tbcm.evaluation.teachers import DEFAULT_INTERVALS, DEFAULT_SHIFTS, DEFAULT_STEPS, TeacherGrid  # noqa: E402

DEFAULT_DRAWS = {"tune": 4, "confirm": 10}
BEST_STEPS = ",".join(str(k) for k in DEFAULT_STEPS)  # the grid's defaults, as tbcm eval --teacher-best has them
BEST_SHIFT = ",".join(f"{s:g}" for s in DEFAULT_SHIFTS)
BEST_INTERVAL = ",".join(DEFAULT_INTERVALS)
# a tiny budget: a few steps, one seed, one draw of 2 images per class, a two-setting teacher grid
SMOKE_GRID = {"best_steps": "2", "best_shift": "1,2.5", "best_cfg": "1", "best_interval": "none"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits_default", help="a pinned suite (benchmarks/suites/NAME.yaml)")
    ap.add_argument("--split", choices=splits.SPLITS, default="tune")
    ap.add_argument("--seeds", type=int, default=None, help="train the split's first N training seeds (default all)")
    ap.add_argument("--skip-seeds", type=int, default=0,
                    help="start after the split's first K training seeds: one row's seeds in processes side by "
                         "side (--seeds 1 in one, --skip-seeds 1 --seeds 1 --no-best in the other)")
    ap.add_argument("--draws", type=int, default=None, help="evaluation draws 0..N-1 of the split (tune 4, confirm 10)")
    ap.add_argument("--n", type=int, default=None, help="images per class in a draw (default: the judge's)")
    ap.add_argument("--steps", default="1,2,4", help="student step counts")
    ap.add_argument("--best-steps", default=BEST_STEPS, help=f"the teacher's grid: step counts (default {BEST_STEPS})")
    ap.add_argument("--best-shift", default=BEST_SHIFT, help=f"the teacher's grid: route shifts (default {BEST_SHIFT})")
    ap.add_argument("--best-cfg", default=None,
                    help="the teacher's grid: guidance scales (default: 1 and the scales the student was trained on)")
    ap.add_argument("--best-interval", default=BEST_INTERVAL,
                    help="the teacher's grid: guidance intervals, each run (the student's), none (every angle) "
                         f"or LO:HI radians (default {BEST_INTERVAL})")
    ap.add_argument("--best-draw", type=int, default=0,
                    help="the tune draw the teacher's best is chosen on (default 0)")
    ap.add_argument("--best-n", type=int, default=None,
                    help="images per class of that tune draw (default: --n, else the judge's)")
    ap.add_argument("--rechoose-best", action="store_true",
                    help="run the teacher's grid again even if the store holds its choice")
    ap.add_argument("--no-best", action="store_true",
                    help="no teacher at its best: the students alone (with the teacher as copied and fidelity)")
    ap.add_argument("--name", default=None, help="the row's name (default: the suite and its --set overrides)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.draws, args.n = args.seeds or 1, args.draws or 1, args.n or 2
        defaults = {"best_steps": BEST_STEPS, "best_shift": BEST_SHIFT, "best_cfg": None,
                    "best_interval": BEST_INTERVAL}
        for key, tiny in SMOKE_GRID.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, tiny)
    args.best_n = args.best_n if args.best_n is not None else args.n
    try:
        args.grid = None if args.no_best else grid_of(args)
    except (UserError, ValueError) as exc:
        ap.error(str(exc))
    return args


def grid_of(args) -> TeacherGrid:
    """The teacher's grid from ``--best-*`` (checked before anything trains)."""
    grid = TeacherGrid(steps=tuple(cli.ints(args.best_steps)), shifts=tuple(cli.floats(args.best_shift)),
                       cfgs=tuple(cli.floats(args.best_cfg)) if args.best_cfg else None,
                       intervals=tuple(v.strip() for v in args.best_interval.split(",") if v.strip()),
                       draw=args.best_draw)
    grid.check()
    return grid


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    store, cmd, name, overrides = cli.start(args, "quality.py", argv)
    seeds = splits.train_seeds(args.split)[args.skip_seeds:][:args.seeds]
    if not seeds:
        raise SystemExit(f"--skip-seeds {args.skip_seeds} leaves none of the {args.split} split's "
                         f"{len(splits.train_seeds(args.split))} training seeds: pass a smaller --skip-seeds")
    draws = list(range(args.draws or DEFAULT_DRAWS[args.split]))
    steps = cli.ints(args.steps)
    common = {"label": name, "suite": Path(args.suite).stem, "split": args.split, "smoke": args.smoke}
    runs, scores = [], []
    for seed in seeds:
        run = runner.plan_run(args.suite, args.split, seed, args.runs, overrides, args.threads)
        print(f"[{name}] seed {seed}: {'trained before' if runner.is_done(run) else 'training'} -> {run.dir}",
              flush=True)
        runner.train(run)
        runs.append(run)
        scores.append(score.score_run(run.dir, args.split, draws, steps, args.n, device=args.eval_device))
        store.append("quality", {"key": f"student|{name}|{args.split}|seed={seed}", "kind": "student", **common,
                                 "train_seed": seed, "config_hash": run.hash, "run": str(run.dir),
                                 "training": runner.training_cost(run.dir), "score": scores[-1],
                                 "manifest": manifest(cmd, config=run.cfg)})
    # the teacher: one record per suite (every seed's run has the same teacher and sampler)
    if args.grid is not None:
        best, fresh = score.teacher_best_record(
            store, runs[0].dir, args.grid, args.best_n,
            {"label": name, "suite": common["suite"], "smoke": args.smoke,
             "manifest": manifest(cmd, config=runs[0].cfg)},
            again=args.rechoose_best, progress=not args.smoke, device=args.eval_device)
        chosen = score.setting_of(best["setting"])
        print(f"[{name}] the teacher at its best: {chosen.label()} ({'chosen now' if fresh else 'chosen before'} "
              f"among {len(best['tried'])} settings on tune draw {best['tune']['draw']}, FID there "
              f"{best['tune']['fid']:.4f}); scoring it on {args.split} draws {draws[0]}-{draws[-1]}", flush=True)
        copied = score.teacher_as_copied(scores[0])
        at_best = (copied if score.best_is_as_copied(best["setting"], copied) else
                   score.score_teacher(runs[0].dir, chosen, args.split, draws, args.n, args.eval_device))
        store.append("quality", {"key": f"teacher|{name}|{args.split}", "kind": "teacher", **common,
                                 "config_hash": runs[0].hash, "best_key": best["key"],
                                 "at_best": at_best, "as_copied": copied,
                                 "manifest": manifest(cmd, config=runs[0].cfg)})
    print(tables.quality_section(store.latest("quality"), name, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
