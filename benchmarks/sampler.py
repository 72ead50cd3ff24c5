"""Tune the few-step sampler of a suite's students (no retraining beyond the suite's tune runs):
every combination of guidance input, route shift, re-noising share and explicit routes, scored
on the tune split's training seeds and draws, one record per setting (``sampler.jsonl``).

Choices are made here, on tune only; a chosen sampler becomes a pinned suite (its ``sampler.*``
keys) and is then reported by ``quality.py --split confirm``. Runs are the ones
``quality.py --split tune`` trains (the same folders; trained here if missing). The students alone
are scored (FID, adherence): the teacher's images would be the same for every setting.

    python benchmarks/sampler.py --suite digits_default --cfg 2,3 --shift 0.25,1 --fresh 0.5,1
    python benchmarks/sampler.py --suite digits_default --steps 4 --routes "4:0.26/0.25/0.24;4:0.8/0.34/0.12"
    python benchmarks/sampler.py --suite digits_default --smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `benchmarks.harness`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cli, runner, tables  # noqa: E402
from benchmarks.harness.score import score_run  # noqa: E402
from benchmarks.harness.store import manifest  # noqa: E402
from tbcm.evaluation import splits  # noqa: E402

SPLIT = "tune"  # the sampler is a choice: never made on confirm


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="digits_default", help="a pinned suite (benchmarks/suites/NAME.yaml)")
    ap.add_argument("--cfg", default="", help="guidance inputs w (default: the saved one)")
    ap.add_argument("--shift", default="",
                    help="route shifts; a shift drops the saved explicit routes (default: saved)")
    ap.add_argument("--fresh", default="", help="re-noising shares of fresh noise in [0, 1] (default: saved)")
    ap.add_argument("--routes", default="",
                    help="';'-separated alternatives of explicit routes, each as `tbcm eval --routes` "
                         "('4:0.26/0.25/0.24', or 'none': the shifted route at every count)")
    ap.add_argument("--steps", default="1,2,4", help="student step counts")
    ap.add_argument("--seeds", type=int, default=None, help="the tune split's first N training seeds (default all)")
    ap.add_argument("--draws", type=int, default=4, help="tune draws 0..N-1 (default 4)")
    ap.add_argument("--n", type=int, default=None, help="images per class (default: the judge's)")
    ap.add_argument("--name", default=None, help="the rows' name (default: the suite and its --set overrides)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.draws, args.n = args.seeds or 1, min(args.draws, 1), args.n or 2
    return args


def settings(args) -> list[dict]:
    """Every combination asked for, as ``saved_sampler`` overrides (``None``: keep the saved value)."""
    from tbcm.sampling import parse_routes

    routes = [parse_routes(r) for r in args.routes.split(";") if r.strip()] or [None]
    return [{"cfg_scale": w, "shift": s, "fresh_noise": a, "routes": r}
            for w, s, a, r in itertools.product(cli.floats(args.cfg) or [None], cli.floats(args.shift) or [None],
                                                cli.floats(args.fresh) or [None], routes)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    store, cmd, name, overrides = cli.start(args, "sampler.py", argv)
    draws, steps = list(range(args.draws)), cli.ints(args.steps)
    runs = []
    for seed in splits.train_seeds(SPLIT)[:args.seeds]:
        run = runner.plan_run(args.suite, SPLIT, seed, args.runs, overrides, args.threads)
        print(f"[{name}] seed {seed}: {'trained before' if runner.is_done(run) else 'training'} -> {run.dir}",
              flush=True)
        runner.train(run)
        runs.append(run)
    for setting in settings(args):
        per_run, chosen = [], None
        for run in runs:
            score = score_run(run.dir, SPLIT, draws, steps, args.n, sampler=setting, teacher=False)
            chosen = {k: score["sampler"][k] for k in ("cfg_scale", "shift", "fresh_noise", "routes")}
            per_run.append({"train_seed": run.seed, "config_hash": run.hash, "student": score["student"]})
        fids = ", ".join(f"{k} steps {sum(p['student'][k]['fid'] for p in per_run) / len(per_run):.2f}"
                         for k in per_run[0]["student"])
        print(f"[{name}] {json.dumps(chosen)}: FID {fids}", flush=True)
        store.append("sampler", {"key": f"sampler|{name}|{json.dumps(chosen, sort_keys=True)}|steps={args.steps}",
                                 "label": name, "suite": Path(args.suite).stem, "split": SPLIT, "smoke": args.smoke,
                                 "draws": draws, "n_per_class": score["n_per_class"], "setting": chosen,
                                 "per_run": per_run, "manifest": manifest(cmd, config=runs[0].cfg)})
    print(tables.sampler_section([r for r in store.latest("sampler") if r["label"] == name], name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
