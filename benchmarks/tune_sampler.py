"""The data-free sampler tuning (``tbcm tune-sampler``, :mod:`tbcm.sampler_tuning`) against a judge.

``check`` (tune training seeds, tune draw): the sampler search is run once with every candidate also
scored by the digit judge's FID against the held-out digits (``fid_data``, which the tuning never
sees); per step count it records the rank correlation (Spearman) of the data-free measure (the
paired latent error to the teacher) with ``fid_data`` and the ``fid_data`` of the sampler it picks,
beside the best candidate's, the run's saved sampler's and the library default's (shift 2.5, fresh
noise). Nothing is written to the runs. This is where the measure was chosen.

``confirm`` (confirm training seeds, confirm draws): each run's student is copied, its sampler reset
to the library default's routes and re-noising (its guidance input kept), tuned on tune noise, and
scored on the confirm draws beside the run's own saved sampler and the library default: FID per
step count, mean and standard error over the runs.

    python benchmarks/tune_sampler.py check runs/tune/s100 runs/tune/s101 --images 1000
    python benchmarks/tune_sampler.py confirm runs/bench/digits_default/confirm_s20* --draws 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cli  # noqa: E402
from benchmarks.harness.store import manifest  # noqa: E402

TABLE = "tune_sampler"
LIBRARY_DEFAULT = {"shift": 2.5, "fresh_noise": 1.0, "routes": {}}  # SamplerConfig()'s route and re-noising


def spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a, dtype=torch.float64).argsort().argsort().double()
    rb = torch.tensor(b, dtype=torch.float64).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-30))


def check_run(run: str, images: int, draw: int) -> dict:
    from tbcm.models.bundle import load_bundle
    from tbcm.evaluation.digits import _suite_class
    from tbcm.evaluation.runs import find_student
    from tbcm.sampler import StudentSampler
    from tbcm.sampler_tuning import MEASURE, tune_saved_student
    from tbcm.sampling import to_pixels
    from tbcm.trigflow import reference_route

    student_dir, _ = find_student(run)
    suite = _suite_class(load_bundle(student_dir, expect_kind="student", text_cache=None), run, required=True)(None)

    def judge(tune, n, bundle):  # the digits: FID against the held-out digits; the scenes: seen prompts
        return {"fid_data": lambda x0: _fid(suite.score(to_pixels(x0, bundle.meta.sigma_d), n))}

    # a run tuned at its end (sampler.tune) starts from the sampler it had before (its record's "before")
    tuned = Path(run) / "sampler_tuning.json"
    start = StudentSampler.from_dict(json.loads(tuned.read_text())["before"]) if tuned.is_file() else None
    prompts = list(suite.prompts)  # the judge scores its own prompts, in its order (scenes: seen, then held-out)
    images = len(prompts) * max(1, images // len(prompts))
    result, record = tune_saved_student(run, images=images, draw=draw, prompts=prompts, write=False, progress=True,
                                        also=judge, start=start)
    saved = result.before
    out = {"run": Path(run).name, "draw": draw, "images": record["images"], "steps": {}}
    for n in sorted({t["steps"] for t in record["tried"]}):
        rows = [t for t in record["tried"] if t["steps"] == n]
        fid = [t["scores"]["fid_data"] for t in rows]

        def fid_of(route, share):
            hit = [t for t in rows if t["route"] == [round(float(a), 6) for a in route] and t["fresh_noise"] == share]
            return hit[0]["scores"]["fid_data"] if hit else None

        entry = {"candidates": len(rows), "best": min(fid), "saved": fid_of(saved.angles(n)[1:-1], saved.fresh_noise),
                 "library_default": fid_of(reference_route(n, 2.5)[1:].tolist(), 1.0)}
        for m in (MEASURE,):
            vals = [t["scores"][m] for t in rows]
            pick = min(range(len(rows)), key=lambda i: vals[i])
            entry[m] = {"spearman": spearman(vals, fid), "picks": fid[pick],
                        "route": rows[pick]["route"], "fresh_noise": rows[pick]["fresh_noise"]}
        out["steps"][str(n)] = entry
    return out


def _fid(scores: dict) -> float:
    return scores["fid"] if "fid" in scores else scores["seen"]["fid"]


def confirm_run(run: str, scratch: Path, draws: list[int], images: int) -> dict:
    import yaml

    from benchmarks.harness.score import score_run
    from tbcm.sampler_tuning import tune_saved_student

    run = Path(run)
    copy = scratch / run.name
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir(parents=True)
    shutil.copy2(run / "config.yaml", copy / "config.yaml")
    shutil.copytree(run / "student", copy / "student")
    meta_file = copy / "student" / "model.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    meta["extra"]["sampler"].update(LIBRARY_DEFAULT)
    meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    result, record = tune_saved_student(copy, images=images, progress=True)
    scores = {"tuned": score_run(copy, "confirm", draws, teacher=False),
              "saved": score_run(run, "confirm", draws, teacher=False),
              "library_default": score_run(run, "confirm", draws, sampler=LIBRARY_DEFAULT, teacher=False)}
    return {"run": run.name, "chosen": record["chosen"],
            "fid": {name: {k: v["fid"] for k, v in s["student"].items()} for name, s in scores.items()},
            "samplers": {name: s["sampler"] for name, s in scores.items()}}


def mean_se(values: list[float]) -> tuple[float, float | None]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.fmean(values), se


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["check", "confirm"])
    ap.add_argument("runs", nargs="+", help="digits distill run folders (check: tune seeds; confirm: confirm seeds)")
    ap.add_argument("--images", type=int, default=1000, help="check: tune images, a multiple of the judge's prompts "
                    "(1000: 100 per digit; scenes: 96 prompts); confirm: see --tuning-images")
    ap.add_argument("--draw", type=int, default=0, help="check: the tune draw")
    ap.add_argument("--draws", type=int, default=5, help="confirm: confirm draws 0..N-1")
    ap.add_argument("--tuning-images", type=int, default=512, help="confirm: tune images of the tuning (its default)")
    cli.add_common(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    store = cli.store_of(args)
    command = cli.command("tune_sampler.py", argv)
    if args.mode == "check":
        for run in args.runs:
            res = check_run(run, args.images, args.draw)
            store.append(TABLE, {"key": f"check:{res['run']}:draw{args.draw}", "mode": "check", **res,
                                 "manifest": manifest(command)})
            print(f"{res['run']} (tune draw {res['draw']}, {res['images']} images): FID against the held-out digits")
            for n, e in res["steps"].items():
                picks = "; ".join(f"{m} picks {e[m]['picks']:.2f} (rho {e[m]['spearman']:+.2f})"
                                  for m in ("paired", "frechet") if m in e)
                print(f"  {n} steps, {e['candidates']} candidates: best {e['best']:.2f}, saved {e['saved']:.2f}, "
                      f"library default {e['library_default']:.2f}; {picks}")
        return
    scratch = Path(args.runs[0]).parent / "tuned_copies"
    rows = [confirm_run(run, scratch, list(range(args.draws)), args.tuning_images) for run in args.runs]
    summary = {}
    for name in ("tuned", "saved", "library_default"):
        summary[name] = {k: mean_se([r["fid"][name][k] for r in rows]) for k in rows[0]["fid"][name]}
    store.append(TABLE, {"key": "confirm:" + ",".join(r["run"] for r in rows), "mode": "confirm", "runs": rows,
                         "draws": args.draws, "summary": summary, "manifest": manifest(command)})
    for name, per in summary.items():
        print(f"{name:16s} " + "  ".join(f"{k} step(s) {m:.2f} +- {se:.2f}" for k, (m, se) in per.items()))


if __name__ == "__main__":
    main()
