"""Quality of a pinned suite: train it on the training seeds of a split, score each student at 1, 2
and 4 steps on that split's evaluation draws, and score the teacher over its guidance.

Every choice (a recipe, a sampler, the teacher's best guidance) is made on ``--split tune``; the
reported figures come from ``--split confirm`` (docs/results.md: ``python benchmarks/report.py``).
Each student and the teacher become one record of the results store (``quality.jsonl``) with its
manifest; a run already trained with the same config is not trained again.

    python benchmarks/quality.py --suite digits_default --split tune            # choose here
    python benchmarks/quality.py --suite digits_default --split confirm         # report this
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

from benchmarks.harness import cli, runner, splits, tables  # noqa: E402
from benchmarks.harness.score import score_run  # noqa: E402
from benchmarks.harness.store import manifest  # noqa: E402

DEFAULT_DRAWS = {"tune": 4, "confirm": 10}
TEACHER_CFGS = "1,1.5,2,3,4.5"
# a tiny budget: a few steps, one seed, one draw of 2 images per class, the teacher at 2 steps
SMOKE = ["steps=6", "log_every=2", "preview.seeds=1", "prompts_per_step=2", "pairs.pool_prompts=4"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits_default", help="a pinned suite (benchmarks/suites/NAME.yaml)")
    ap.add_argument("--split", choices=splits.SPLITS, default="tune")
    ap.add_argument("--seeds", type=int, default=None, help="train the split's first N training seeds (default all)")
    ap.add_argument("--draws", type=int, default=None, help="evaluation draws 0..N-1 of the split (tune 4, confirm 10)")
    ap.add_argument("--n", type=int, default=None, help="images per class in a draw (default: the judge's)")
    ap.add_argument("--steps", default="1,2,4", help="student step counts")
    ap.add_argument("--teacher-steps", default="16", help="teacher step counts ('' : no teacher)")
    ap.add_argument("--teacher-cfgs", default=TEACHER_CFGS, help="the teacher's guidance scales")
    ap.add_argument("--name", default=None, help="the row's name (default: the suite and its --set overrides)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.draws, args.n = args.seeds or 1, args.draws or 1, args.n or 2
        args.teacher_steps = "2" if args.teacher_steps == "16" else args.teacher_steps
        args.teacher_cfgs = "1" if args.teacher_cfgs == TEACHER_CFGS else args.teacher_cfgs
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    store, cmd = cli.store_of(args), cli.command("quality.py", argv)
    name = (args.name or cli.label(args.suite, args.overrides)) + (" (smoke)" if args.smoke else "")
    overrides = [*(SMOKE if args.smoke else []), *args.overrides]
    seeds = splits.train_seeds(args.split)[:args.seeds]
    draws = list(range(args.draws or DEFAULT_DRAWS[args.split]))
    steps, teacher_steps = cli.ints(args.steps), cli.ints(args.teacher_steps)
    common = {"label": name, "suite": Path(args.suite).stem, "split": args.split, "smoke": args.smoke}
    runs = []
    for seed in seeds:
        run = runner.plan_run(args.suite, args.split, seed, args.runs, overrides, args.threads)
        print(f"[{name}] seed {seed}: {'trained before' if runner.is_done(run) else 'training'} -> {run.dir}",
              flush=True)
        runner.train(run)
        runs.append(run)
        score = score_run(run.dir, args.split, draws, steps, args.n)
        store.append("quality", {"key": f"student|{name}|{args.split}|seed={seed}", "kind": "student", **common,
                                 "train_seed": seed, "config_hash": run.hash, "run": str(run.dir),
                                 "training": runner.training_cost(run.dir), "score": score,
                                 "manifest": manifest(cmd, config=run.cfg)})
    if teacher_steps:
        print(f"[{name}] the teacher at {args.teacher_steps} steps, guidance {args.teacher_cfgs}", flush=True)
        score = score_run(runs[0].dir, args.split, draws, (1,), args.n, teacher_steps, cli.floats(args.teacher_cfgs))
        store.append("quality", {"key": f"teacher|{name}|{args.split}", "kind": "teacher", **common,
                                 "config_hash": runs[0].hash, "score": score,
                                 "manifest": manifest(cmd, config=runs[0].cfg)})
    print(tables.quality_section(store.latest("quality"), name, args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
