"""The data-free sampler tuning (``tbcm tune-sampler``, :mod:`tbcm.sampler_tuning`) against a judge.

``check`` (tune training seeds, tune draw): the sampler search is run once with every candidate also
scored by the digit judge's FID against the held-out digits (``fid_data``, which the tuning never
sees); per step count it records the rank correlation (Spearman) of the data-free measure (the
paired latent error to the teacher) with ``fid_data`` and the ``fid_data`` of the sampler it picks,
beside the best candidate's, the run's saved sampler's and the library default's (shift 2.5, fresh
noise); beside them the pick of a spectrum guard (tried, not adopted: :func:`admissible`) and the
library's own pick under its cap on re-noising angles. Nothing is written to the runs. This is where
the measure and the cap were chosen.

``confirm`` (confirm training seeds, confirm draws): each run's student is copied, its sampler reset
to the library default's routes and re-noising (its guidance input kept), tuned on tune noise, and
scored on the confirm draws beside the run's own saved sampler and the library default: FID per
step count, mean and standard error over the runs.

``start`` (tune training seeds, tune draw): the 1-step sample from start angles below pi/2 (the
pure noise read as the state at that angle), which the search leaves out: per angle the judge's FID
against real data, the paired latent error to the teacher as copied and the spectrum ratio per
band (:mod:`tbcm.evaluation.spectrum`). It asks whether the 1-step speckle comes from the student's
output at exactly pi/2 (where the sCM tangent, which scales with cos t, gives it no signal) and
whether the paired error could choose the start angle.

    python benchmarks/tune_sampler.py check runs/tune/s100 runs/tune/s101 --images 1000
    python benchmarks/tune_sampler.py start runs/tune/s100 runs/tune/scenes_s100 --images 520
    python benchmarks/tune_sampler.py confirm runs/bench/digits_default/confirm_s20* --draws 5
"""

from __future__ import annotations

import argparse
import json
import math
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


SPECTRUM_LIMIT = math.log(1.25)  # the clean-sample band: 0.8-1.25x the teacher's power in every band


def spectrum_deviation(ratios: list[float]) -> float:
    """The worst band's distance from the teacher's spectrum, ``max |log r|`` over the bands' power
    ratios ``r`` (0 = the teacher's; ``log 1.25`` = a band 25% above or 20% below; NaN bands skipped)."""
    return max(abs(math.log(max(r, 1e-30))) for r in ratios if math.isfinite(r))


def admissible(deviations: list[float], limit: float = SPECTRUM_LIMIT) -> list[bool]:
    """The spectrum guard ``check`` tries beside the paired error: the candidates within ``limit``
    (:func:`spectrum_deviation`), or, where none is, those as close to the teacher's as the closest."""
    bound = max(limit, min(deviations))
    return [d <= bound + 1e-12 for d in deviations]


def check_run(run: str, images: int, draw: int) -> dict:
    from tbcm.models.bundle import load_bundle
    from tbcm.evaluation.digits import _suite_class
    from tbcm.evaluation.runs import find_student
    from tbcm.sampler import StudentSampler
    from tbcm.sampler_tuning import MEASURE, SPECTRUM, tune_saved_student
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
    out = {"run": Path(run).name, "draw": draw, "images": record["images"], "steps": {},
           "max_angle": record["space"].get("max_angle")}  # the cap on the chosen routes' angles (None: none)
    for n in sorted({t["steps"] for t in record["tried"]}):
        rows = [t for t in record["tried"] if t["steps"] == n]
        fid = [t["scores"]["fid_data"] for t in rows]

        def fid_of(route, share):
            hit = [t for t in rows if t["route"] == [round(float(a), 6) for a in route] and t["fresh_noise"] == share]
            return hit[0]["scores"]["fid_data"] if hit else None

        entry = {"candidates": len(rows), "best": min(fid), "saved": fid_of(saved.angles(n)[1:-1], saved.fresh_noise),
                 "library_default": fid_of(reference_route(n, 2.5)[1:].tolist(), 1.0)}
        vals = [t["scores"][MEASURE] for t in rows]
        allowed = admissible([spectrum_deviation(t["scores"][SPECTRUM]) for t in rows])
        for name, ok in ((MEASURE, [True] * len(rows)), ("guarded", allowed)):
            # per step count, the lowest paired error (among the spectrum-admissible ones when guarded)
            pick = min(range(len(rows)), key=lambda i: (not ok[i], vals[i]))
            entry[name] = {"spearman": spearman(vals, fid), "picks": fid[pick], "spectrum": rows[pick]["scores"][SPECTRUM],
                           "route": rows[pick]["route"], "fresh_noise": rows[pick]["fresh_noise"]}
        entry["chosen"] = fid_of(result.sampler.angles(n)[1:-1], result.sampler.fresh_noise)  # the library's choice
        out["steps"][str(n)] = entry
    return out


START_ANGLES = (math.pi / 2, 1.565, 1.56, 1.55, 1.54, 1.52, 1.5, 1.45, 1.4)


def start_run(run: str, images: int, draw: int, starts=START_ANGLES) -> dict:
    """1-step samples of ``run``'s student from each angle of ``starts`` on tune draw ``draw``."""
    from tbcm.evaluation.digits import _suite_class
    from tbcm.evaluation.draws import Encodings, ImageDraw, sample_draw, teacher_fn
    from tbcm.evaluation.fidelity import latent_error
    from tbcm.evaluation.runs import find_student, run_teacher
    from tbcm.evaluation.spectrum import block_ratio, pixel_patch, spectrum_ratio
    from tbcm.evaluation.splits import draw_seed
    from tbcm.evaluation.teachers import copied_setting
    from tbcm.models.bundle import load_bundle
    from tbcm.models.student import Student
    from tbcm.models.teacher import Teacher
    from tbcm.sampler import StudentSampler
    from tbcm.sampling import student_sample, to_pixels

    student_dir, run_dir = find_student(run)
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    suite = _suite_class(bundle, run, required=True)(None)
    prompts = list(suite.prompts)
    n = max(1, images // len(prompts))
    tune = ImageDraw(tuple(prompts), n, draw_seed("tune", draw))
    teacher = Teacher.from_bundle(load_bundle(run_teacher(run_dir), expect_kind="teacher", text_cache=None))
    student, encoder = Student.from_bundle(bundle).eval(), bundle.encoder.eval()
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
    sd, patch = bundle.meta.sigma_d, pixel_patch(bundle.meta)
    setting = copied_setting(sampler, sampler.cfg_scale)

    def pixels(x0):
        return to_pixels(x0, sd) if bundle.decode is None else bundle.decode(x0)

    with torch.no_grad():
        teacher_x0 = sample_draw(tune, teacher_fn(teacher, setting.route(), setting.cfg, setting.interval),
                                 Encodings(prompts, teacher.encoder), shape)
        enc = Encodings(prompts, encoder)
        teacher_px = pixels(teacher_x0)
        rows = []
        for start in starts:
            def one_step(cond, noise, gens, start=float(start)):
                w = torch.full((noise.shape[0],), sampler.cfg_scale)
                return student_sample(student, cond, w, noise, [start, 0.0])
            x0 = sample_draw(tune, one_step, enc, shape)
            px = pixels(x0)
            rows.append({"start": float(start), "fid_data": _fid(suite.score(px, n)),
                         "paired": latent_error(x0, teacher_x0, sd, n)["latent_mse"],
                         "spectrum": spectrum_ratio(px, teacher_px),
                         "blocks": block_ratio(px, teacher_px, patch) if patch else None})
    return {"run": Path(run).name, "teacher": run_teacher(run_dir), "draw": draw, "images": len(tune),
            "teacher_setting": setting.label(), "teacher_fid_data": _fid(suite.score(teacher_px, n)),
            "starts": rows, "spearman": spearman([r["paired"] for r in rows], [r["fid_data"] for r in rows])}


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
    ap.add_argument("mode", choices=["check", "confirm", "start"])
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
    if args.mode == "start":
        for run in args.runs:
            res = start_run(run, args.images, args.draw)
            store.append(TABLE, {"key": f"start:{res['run']}:draw{args.draw}", "mode": "start", **res,
                                 "manifest": manifest(command)})
            print(f"{res['run']} (tune draw {res['draw']}, {res['images']} images; teacher as copied "
                  f"{res['teacher_setting']}: FID {res['teacher_fid_data']:.2f}); 1 step from each start angle:")
            for r in res["starts"]:
                blocks = f", blocks {r['blocks']:.2f}" if r["blocks"] is not None else ""
                print(f"  start {r['start']:.4f} rad: FID {r['fid_data']:.2f}, paired {r['paired']:.4f}, spectrum "
                      + " ".join(f"{v:.2f}" for v in r["spectrum"]) + blocks)
            print(f"  rank correlation of the paired error with FID over the angles: {res['spearman']:+.2f}")
        return
    if args.mode == "check":
        for run in args.runs:
            res = check_run(run, args.images, args.draw)
            store.append(TABLE, {"key": f"check:{res['run']}:draw{args.draw}", "mode": "check", **res,
                                 "manifest": manifest(command)})
            print(f"{res['run']} (tune draw {res['draw']}, {res['images']} images): the judge's FID against its held-out real images")
            for n, e in res["steps"].items():
                picks = "; ".join(f"{m} picks {e[m]['picks']:.2f} (rho {e[m]['spearman']:+.2f})"
                                  for m in ("paired", "frechet") if m in e)
                if "guarded" in e:
                    picks += (f"; guarded by the spectrum picks {e['guarded']['picks']:.2f} (spectrum "
                              + " ".join(f"{v:.2f}" for v in e["guarded"]["spectrum"]) + f"); chosen {e['chosen']:.2f}")
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
