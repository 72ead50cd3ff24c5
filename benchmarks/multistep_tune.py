"""Tune the few-step sampler of trained digits students on draws the report never sees (no training).

For each setting of the multi-step sampler -- the guidance input ``w``, the route (a shift: the
2-step middle angle is ``arctan(shift)`` rad; or explicit middle angles, ``--routes``) and the
re-noising share of fresh noise (1 = sCM's fresh noise, 0 = the noise implied by the state) --
every student is scored at ``--steps`` (default 2) on tuning draws ``--first-draw ..`` (default 10
to 13: disjoint from `eval_noise.py`'s draws 0-9, so a setting chosen here is confirmed there on
images it was not chosen on). Each student's
1-step sample at every ``w`` is scored on the same draws as the reference: a row reads "2 <= 1"
on the seeds whose k-step FID is at most their 1-step FID at the recipe's 1-step input
``--one-step-cfg``. ``--versus 2`` makes the reference each student's own saved 2-step sampler
(its route and re-noising share, at ``--one-step-cfg``; ``--versus-shift`` / ``--versus-fresh``
set them, for students saved before their recipe's sampler was chosen) instead: a 4-step row then
reads "4 <= 2".

    python benchmarks/multistep_tune.py RUN RUN RUN --cfgs 2,2.5,3 --shifts 1,0.7 --fresh 1,0.5 \\
        --one-step-cfg 3 --json benchmarks/results/multistep_tune.json
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import statistics
from pathlib import Path

import torch

from eval_noise import student_draws
from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.metrics import FIDReference
from tbcm.sampling import parse_routes


def _floats(text: str, name: str, ap) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ap.error(f"{name} {text!r}: expected comma-separated numbers, e.g. 1,0.7")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="tbcm distill run folders (a recipe's seeds)")
    ap.add_argument("--steps", type=int, default=2, help="the multi-step sampler's step count")
    ap.add_argument("--cfgs", default="2,2.5,3", help="guidance inputs")
    ap.add_argument("--shifts", default="1", help="route shifts")
    ap.add_argument("--fresh", default="1", help="re-noising shares of fresh noise")
    ap.add_argument("--routes", default=None,
                    help="explicit routes instead of --shifts: ';'-separated middle angles (rad) for --steps, "
                         "e.g. '0.81/0.337/0.116;0.337/0.2/0.1'")
    ap.add_argument("--one-step-cfg", type=float, default=None,
                    help="the recipe's 1-step guidance input, the reference of '2 <= 1' (default: each row's w)")
    ap.add_argument("--versus", type=int, default=1,
                    help="the reference step count of 'k <= K': 1, or K > 1 for each student's saved K-step sampler")
    ap.add_argument("--versus-shift", type=float, default=None, help="the reference sampler's route shift (default: saved)")
    ap.add_argument("--versus-fresh", type=float, default=None, help="its re-noising share (default: saved)")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--first-draw", type=int, default=10)
    ap.add_argument("--n", type=int, default=100, help="images per digit in each draw")
    ap.add_argument("--json", default=None, help="also write every score here")
    args = ap.parse_args()
    cfgs, shifts, fresh = (_floats(args.cfgs, "--cfgs", ap), _floats(args.shifts, "--shifts", ap),
                           _floats(args.fresh, "--fresh", ap))
    if missing := [r for r in args.runs if not Path(r).is_dir()]:
        ap.error(f"no run folder {missing[0]!r}; pass the --out folders of tbcm distill")
    if not 1 <= args.versus < args.steps:
        ap.error(f"--versus {args.versus}: expected a step count from 1 to --steps - 1 ({args.steps - 1})")
    if (args.versus_fresh is not None and not 0 <= args.versus_fresh <= 1) or (args.versus_shift is not None
                                                                            and args.versus_shift <= 0):
        ap.error("--versus-fresh in [0, 1] and --versus-shift > 0")
    if args.steps < 2 or any(not 0 <= a <= 1 for a in fresh) or any(s <= 0 for s in shifts):
        ap.error("--steps >= 2, --fresh shares in [0, 1] and --shifts > 0")
    # a route is a shift (float) or an explicit tuple of middle angles
    routes = ([tuple(parse_routes(f"{args.steps}:{r}")[args.steps]) for r in args.routes.split(";") if r.strip()]
              if args.routes else shifts)
    one_cfgs = sorted(set(cfgs) | ({args.one_step_cfg} if args.one_step_cfg is not None else set()))
    torch.set_num_threads(1)
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    mean = statistics.mean
    with torch.no_grad():
        one = {(r, w): student_draws(r, w, args.draws, args.n, ref, clf, None, steps=(1,),
                                     first_draw=args.first_draw)[1] for r in args.runs for w in one_cfgs}
        multi = {(r, w, s, a): student_draws(r, w, args.draws, args.n, ref, clf, s if isinstance(s, float) else None,
                                             a, steps=(args.steps,), first_draw=args.first_draw,
                                             routes={} if isinstance(s, float) else {args.steps: list(s)})[args.steps]
                 for r in args.runs for w, s, a in itertools.product(cfgs, routes, fresh)}
        # the saved K-step sampler of each student (its own route and re-noising share)
        versus = ({} if args.versus == 1 else
                  {(r, w): student_draws(r, w, args.draws, args.n, ref, clf, args.versus_shift, args.versus_fresh, steps=(args.versus,),
                                         first_draw=args.first_draw)[args.versus] for r in args.runs for w in one_cfgs})
    ref_scores = one if args.versus == 1 else versus
    print(f"draws {args.first_draw}-{args.first_draw + args.draws - 1} of {args.n} images per digit; "
          f"{len(args.runs)} students; {platform.machine()}, torch {torch.__version__}, {datetime.date.today()}\n")
    print(f"| sampler | w | shift or route | fresh noise | FID (mean over seeds) | per seed | adherence | k <= {args.versus} |")
    print("|---|---|---|---|---|---|---|---|")
    def cells(scores: list) -> tuple[list[float], str]:
        """Each run's mean FID over the draws, and the table's FID / per-seed / adherence cells."""
        f = [mean(x for x, _ in sc) for sc in scores]
        a = [100 * mean(y for _, y in sc) for sc in scores]
        return f, f"{mean(f):.2f} | {' / '.join(f'{v:.2f}' for v in f)} | {mean(a):.1f}%"

    for w in one_cfgs:
        print(f"| 1 step | {w:g} | - | - | {cells([one[r, w] for r in args.runs])[1]} | - |")
    vs = "saved" if args.versus_shift is None else f"{args.versus_shift:g}"
    vf = "saved" if args.versus_fresh is None else f"{args.versus_fresh:g}"
    for w in (one_cfgs if args.versus > 1 else []):
        print(f"| {args.versus} steps (reference) | {w:g} | {vs} | {vf} | {cells([versus[r, w] for r in args.runs])[1]} | - |")
    for w, s, a in itertools.product(cfgs, routes, fresh):
        f, shown_cells = cells([multi[r, w, s, a] for r in args.runs])
        w1 = args.one_step_cfg if args.one_step_cfg is not None else w
        ok = sum(fk <= mean(x for x, _ in ref_scores[r, w1]) for fk, r in zip(f, args.runs))
        shown = f"{s:g}" if isinstance(s, float) else "/".join(f"{m:g}" for m in s)
        print(f"| {args.steps} steps | {w:g} | {shown} | {a:g} | {shown_cells} | {ok}/{len(args.runs)} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "draws": args.draws, "first_draw": args.first_draw, "n": args.n, "steps": args.steps,
            "one_step": [{"run": r, "w": w, "scores": one[r, w]} for r, w in one],
            "versus": args.versus, "versus_shift": args.versus_shift, "versus_fresh": args.versus_fresh,
            "versus_saved": [{"run": r, "w": w, "scores": versus[r, w]} for r, w in versus],
            "multi_step": [{"run": r, "w": w, **({"shift": s} if isinstance(s, float) else {"route": list(s)}),
                            "fresh_noise": a, "scores": multi[r, w, s, a]}
                           for r, w, s, a in multi]}, indent=1))


if __name__ == "__main__":
    main()
