"""Recipe ablations on the embedded default, measured against the teacher at its best guidance.

Each variant is a list of ``key=value`` overrides of the embedded default; each runs for every
training-guidance set (``--guidance``: a name, the ``cfg_scales`` it trains on and the guidance
it is evaluated at) and every seed. A run trains the full ``steps`` (one CPU thread), then
evaluates its EMA student at 1, 2 and 4 steps: FID on the shipped digit classifier's features
against the 600 held-out digits, and adherence, ``--n`` images per digit with fixed seeds.
The teacher is swept over guidance scales at 16 steps once (``teacher`` rows), so each student
is compared with the teacher's *best* FID.

Results are appended to a JSON-lines file one run at a time (a killed benchmark resumes where it
stopped: finished runs are skipped), and ``--report`` turns the file into the tables of
docs/results.md (mean and spread over seeds) and a PNG of FID against steps.

    python benchmarks/recipe_ablation.py --suite faithful --workers 2          # hours on 2 cores
    python benchmarks/recipe_ablation.py --suite faithful --report             # tables only
    python benchmarks/recipe_ablation.py --suite faithful --seeds 0 --steps 50 # smoke test
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import hashlib
import json
import multiprocessing as mp
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
TEACHER_CFGS = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.5]

# name -> (training cfg_scales, evaluation guidance); "default": the embedded default's own range,
# guidance input and few-step sampler (re-noising share and routes), nothing overridden
GUIDANCE = {"low": ([1.0, 1.25, 1.5], 1.0), "high": ([3.5, 4.5, 5.5], 4.5), "default": (None, None)}

# The faithful, recipe, pool and adversarial suites ran before the cosine decay and the student
# route shift 1.0 became the defaults: pinned to what they ran with, so a rerun repeats them.
BEFORE = ["optim.decay=constant", "sample.student_shift=2.5"]
V1 = ["pairs.route=tbcm_v1", "objective.tangent_norm=rms", "objective.prior_weight=false", *BEFORE]
OFFICIAL_ROUTE = ["pairs.route=official", "objective.tangent_norm=rms", "objective.prior_weight=false", *BEFORE]
ROUTE_PRIOR = ["pairs.route=official", "objective.tangent_norm=rms", "objective.prior_weight=true", *BEFORE]
SUITES = {
    # issue "Faithful to the paper": today's recipe, each official change on its own, then together
    "faithful": {
        "today (tbcm_v1 route, rms, no prior)": V1,
        "official route": OFFICIAL_ROUTE,
        "official route + prior weight": ROUTE_PRIOR,
        "l2 tangent norm": ["pairs.route=tbcm_v1", "objective.tangent_norm=l2", "objective.prior_weight=false", *BEFORE],
        "official (route + prior + l2)": ["pairs.route=official", "objective.tangent_norm=l2",
                                          "objective.prior_weight=true", *BEFORE],
    },
    # issue "The student as good as its teacher": levers on top of the official route, with curves
    "recipe": {
        "route + prior, cfg [1, 1.5, 2]": [*ROUTE_PRIOR, "cfg_scales=[1.0,1.5,2.0]"],
        "route + prior, pool of 64 prompts": [*ROUTE_PRIOR, "pairs.pool_prompts=64"],
    },
    # the pool measured best on seed 0: its other seeds, and two variations of it
    "pool": {
        "route + prior, pool of 64 prompts": [*ROUTE_PRIOR, "pairs.pool_prompts=64"],
        "route + prior, pool of 64, cfg [1, 1.5, 2]": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "cfg_scales=[1.0,1.5,2.0]"],
        "route + prior, pool of 256 prompts": [*ROUTE_PRIOR, "pairs.pool_prompts=256"],
    },
    # issue "The student as good as its teacher" section 3: the data-free adversarial term on top of
    # the default (report with --baseline "benchmarks/results/recipe.jsonl|route + prior, pool of 64 prompts")
    "adversarial": {
        "default + adversarial 0.1": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "objective.adversarial.weight=0.1"],
        "default + adversarial 0.5": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "objective.adversarial.weight=0.5"],
    },
    # the embedded default as shipped, with curves (--guidance default --steps 2400 --curve-every 400):
    # FID against training steps and seconds of the recipe the README's main job runs
    "default": {"embedded default": []},
    # issue "The student as good as its teacher" section 4: the curves still fall at 1200 steps and
    # one seed's 2-step FID is 27 against 8-11 -- a longer run (--steps 2400), with a decaying lr
    "steady": {
        "default, constant lr": [*ROUTE_PRIOR, "pairs.pool_prompts=64"],
        "default, cosine lr decay": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "optim.decay=cosine"],
        "default, ema 0.995": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "optim.ema_decay=0.995"],
        # the 1-step adherence lever, on the cosine default (scored on the student route 1.0)
        "cosine + adversarial 0.1": [*ROUTE_PRIOR, "pairs.pool_prompts=64", "optim.decay=cosine",
                                     "sample.student_shift=1.0", "objective.adversarial.weight=0.1"],
    },
    # the 1-step adherence lever (issue "The student as good as its teacher"): the cosine default's
    # 1-step FID is still falling at the top of its guidance range (1.5) and its adherence rises
    # with the guidance input, so a range reaching higher guidance (--steps 2400; report with
    # --baseline "benchmarks/results/steady.jsonl|default, cosine lr decay")
    "guidance": {
        "default, cfg [1, 2] by 0.25": ["cfg_scales=[1.0,1.25,1.5,1.75,2.0]"],
        "default, cfg [1.25, 2] by 0.25": ["cfg_scales=[1.25,1.5,1.75,2.0]"],
        # twice the pairs per step (240): the seeds scatter widely, so less gradient noise may buy
        # the FID the wider range costs (about twice the time; within the 30 minutes)
        "default, cfg [1, 2] by 0.25, 16 prompts per step": ["cfg_scales=[1.0,1.25,1.5,1.75,2.0]", "prompts_per_step=16"],
    },
    # the trajectory-endpoint term (objective.endpoint_weight): f(x_t, t) -> the pair's own trajectory
    # end, pinning F next to pi/2 where the sCM tangent and the prior weight vanish (--steps 2400;
    # report with --baseline "benchmarks/results/steady.jsonl|default, cosine lr decay")
    "endpoint": {
        "default + endpoint 1": ["objective.endpoint_weight=1.0"],
        "default + endpoint 10": ["objective.endpoint_weight=10.0"],
        "default + endpoint 0.1": ["objective.endpoint_weight=0.1"],
        # weight 0.1 is 0.3 points short of the adherence target at its range top (w = 1.5), where its
        # FID is still falling: one more guidance input (1.75) on top of it
        "default + endpoint 0.1, cfg [1, 1.75]": ["objective.endpoint_weight=0.1", "cfg_scales=[1.0,1.25,1.5,1.75]"],
        # weight 1's adherence (97.6-98.9%) at the FID cost of pinning every pair: the term only on
        # the pairs next to pi/2 (3 or 4 of 15; the sCM loss constrains F below)
        "default + endpoint 1 above 1.45 rad": ["objective.endpoint_weight=1.0", "objective.endpoint_min_angle=1.45"],
        # the window took weight 1 from 15.7 to 13.4 FID at the same adherence (seed 0): a lower weight in it
        "default + endpoint 0.3 above 1.45 rad": ["objective.endpoint_weight=0.3", "objective.endpoint_min_angle=1.45"],
        # the pure-noise point itself as a pair (pairs.noise_point): the 1-step sampler's exact input
        "default + endpoint 0.3 above 1.45 rad + noise point": ["objective.endpoint_weight=0.3",
                                                                "objective.endpoint_min_angle=1.45",
                                                                "pairs.noise_point=true"],
        # a longer EMA (0.999: about the last 1000 of 2400 steps, against 0.99's 100) on the window:
        # it sits at 1.32x and 97.6% on 10 evaluation draws, the FID line 0.14 away
        "default + endpoint 0.3 above 1.45 rad, EMA 0.999": ["objective.endpoint_weight=0.3",
                                                             "objective.endpoint_min_angle=1.45", "optim.ema_decay=0.999"],
        # (EMA 0.999 measured far worse at 1 step: 19-21 FID on 2 seeds.) A narrower window, only the
        # 2 pairs above 1.51 rad, at a weight that keeps about the same total pin
        "default + endpoint 0.5 above 1.51 rad": ["objective.endpoint_weight=0.5", "objective.endpoint_min_angle=1.51"],
        # twice the learning rate on the window (cosine from 2e-4): more progress in the same steps?
        "default + endpoint 0.3 above 1.45 rad, lr 2e-4": ["objective.endpoint_weight=0.3",
                                                           "objective.endpoint_min_angle=1.45", "optim.lr=2e-4"],
        # (2e-4 measured far worse: 20.5 at 1 step on seed 0.) Half the learning rate instead
        "default + endpoint 0.3 above 1.45 rad, lr 5e-5": ["objective.endpoint_weight=0.3",
                                                           "objective.endpoint_min_angle=1.45", "optim.lr=5e-5"],
    },
}


# How evaluation noise is drawn: every image its own seed (initial noise and re-noising). Rows
# without this key drew one seed per column, shared by the ten digits, and one re-noising stream
# per digit (docs/results.md, "The evaluation's own noise"); benchmarks/eval_noise.py scores any run
# folders again, on many draws.
NOISE = "per-image seeds"


def run_key(variant: str, guidance: str, seed: int, steps: int) -> str:
    return f"{variant}|{guidance}|seed={seed}|steps={steps}"


def _fid_reference():
    from tbcm.evaluation.classifier import digits_split, load_classifier
    from tbcm.evaluation.metrics import FIDReference

    clf = load_classifier()
    return FIDReference(digits_split().heldout_images, clf), clf


def _score(images: torch.Tensor, n: int, ref, clf) -> dict:
    from tbcm.evaluation.metrics import adherence

    labels = torch.arange(10).repeat_interleave(n)
    return {"fid": float(ref(images)), "adherence": float(adherence(images, labels, clf))}


def score_student(student, encoder, scales: list[float], w_eval: float, n: int, ref, clf,
                  shift: float = 2.5, fresh: float = 1.0, routes: dict | None = None) -> tuple[dict, dict]:
    """``(scores at w_eval, sweep)``: FID and adherence at 1, 2, 4 steps on the run's sampler (the
    route of ``shift`` or the explicit ``routes`` per step count, re-noising share ``fresh``); the
    sweep holds the student at each guidance input in ``scales`` ("1.0": fresh re-noising) and its 2
    and 4-step samples with half fresh noise ("0.5"), on the same routes."""
    from tbcm.previews import student_samples

    def scores_of(w: float, share: float, steps=(1, 2, 4)) -> dict:
        out = {}
        for k in steps:  # every image its own seed (image j of digit i: i n + j), as `tbcm eval` draws them
            images = torch.cat([student_samples(student, encoder, [p], w, k, n, shift, first_seed=i * n,
                                                fresh_noise=share, independent=True, routes=routes)
                                for i, p in enumerate(PROMPTS)])
            out[str(k)] = _score(images, n, ref, clf)
        return out

    scores = scores_of(w_eval, fresh)
    sweep = {str(w): {"1.0": scores if w == w_eval and fresh == 1.0 else scores_of(w, 1.0),
                      "0.5": scores_of(w, 0.5, steps=(2, 4))}
             for w in scales}
    return scores, sweep


def rescore(path: Path, n: int) -> None:
    """Add the guidance sweep to finished rows that lack it (from their saved student folders)."""
    from tbcm.models.bundle import load_bundle
    from tbcm.models.student import Student

    torch.set_num_threads(1)
    rows = load_results(path)
    ref, clf = _fid_reference()
    for row in rows:
        if row["variant"] == "teacher" or "sweep" in row:
            continue
        bundle = load_bundle(Path(row["run"]) / "student", expect_kind="student")
        _, row["sweep"] = score_student(Student.from_bundle(bundle).eval(), bundle.encoder, row["cfg_scales"],
                                        row["eval_cfg"], row["n"], ref, clf,
                                        float(bundle.meta.extra.get("shift", 2.5)))
        print(f"rescored {row['variant']} {row['guidance']} seed {row['seed']}", flush=True)
    write_results(path, rows)


def write_results(path: Path, rows: list[dict]) -> None:
    """Replace the results file with ``rows`` atomically (a killed rewrite leaves the old file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def run_sampler(cfg, guidance: str) -> tuple[float, dict]:
    """``(re-noising share, explicit routes)`` a run is scored with: the low / high sets were
    measured with sCM's fresh noise on the shifted route; "default" runs the config's own sampler."""
    from tbcm.sampling import routes_by_steps

    if guidance != "default":
        return 1.0, {}
    return float(cfg.sample.student_fresh_noise), routes_by_steps(cfg.sample.student_routes)


def score_checkpoints(d, run: Path, w_eval: float, n: int, ref, clf, shift: float, fresh: float,
                      routes: dict) -> list[dict]:
    """The curve: the EMA of every checkpoint in ``run/checkpoints`` loaded into the Distiller
    ``d`` and scored at 1, 2, 4 steps, with its training seconds from ``run/metrics.csv``."""
    from tbcm.checkpoint import list_checkpoints, load_checkpoint

    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    seconds = {int(r["step"]): float(r["seconds"]) for r in (dict(zip(header, line.split(","))) for line in lines[1:])}
    curve = []
    for ckpt in list_checkpoints(run / "checkpoints"):
        state = load_checkpoint(ckpt)
        d.ema.load_full_state_dict(state["ema"])
        step = int(state["step"])
        curve.append({"step": step, "seconds": seconds.get(step),
                      "student": score_student(d.student_for_sampling(), d.encoder, [], w_eval, n, ref, clf, shift,
                                               fresh, routes)[0]})
    return curve


def resample_row(row: dict) -> dict:
    """``row`` (a "default"-guidance run) re-scored on the few-step sampler its config has now --
    the re-noising share and explicit routes are sampling settings, so training is unchanged: the
    final student, its guidance sweep and every curve checkpoint are sampled again. The sampler
    the row was scored with before is kept under ``"before"``."""
    torch.set_num_threads(1)
    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller
    from tbcm.models.bundle import load_bundle
    from tbcm.models.student import Student

    cfg = load_config(DistillConfig, None, [f"steps={row['steps']}", f"seed={row['seed']}", "threads=1",
                                            *row["overrides"]])
    fresh, routes = run_sampler(cfg, row["guidance"])
    ref, clf = _fid_reference()
    shift, w_eval, n, run = row["student_shift"], row["eval_cfg"], row["n"], Path(row["run"])
    bundle = load_bundle(run / "student", expect_kind="student")
    out = dict(row, fresh_noise=fresh, routes={str(k): v for k, v in routes.items()},
               before={k: row[k] for k in ("fresh_noise", "routes", "student", "sweep", "curve")})
    out["student"], out["sweep"] = score_student(Student.from_bundle(bundle).eval(), bundle.encoder, row["cfg_scales"],
                                                 w_eval, n, ref, clf, shift, fresh, routes)
    if row.get("curve"):  # the run's networks (a Distiller) to load each checkpoint's EMA into
        out["curve"] = score_checkpoints(Distiller(cfg), run, w_eval, n, ref, clf, shift, fresh, routes)
    return out


def resample(path: Path, workers: int) -> None:
    """Re-score, with :func:`resample_row`, every "default"-guidance row whose sampler is not its
    config's current one (one process per row, one thread each); the file is replaced at the end."""
    from tbcm.config import DistillConfig, load_config

    def stale(row: dict) -> bool:
        if row["variant"] == "teacher" or row["guidance"] != "default":
            return False
        fresh, routes = run_sampler(load_config(DistillConfig, None, row["overrides"]), row["guidance"])
        return row["routes"] != {str(k): v for k, v in routes.items()} or row["fresh_noise"] != fresh

    rows = load_results(path)
    todo = [i for i, r in enumerate(rows) if stale(r)]
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        for i, new in zip(todo, pool.map(resample_row, [rows[i] for i in todo])):
            rows[i] = new
            print(f"resampled {new['variant']} seed {new['seed']}: routes {new['before']['routes']} -> {new['routes']}",
                  flush=True)
    write_results(path, rows)


def train_and_eval(variant: str, overrides: list[str], guidance: str, seed: int, steps: int, n: int,
                   out_root: str, curve_every: int = 0) -> dict:
    """One run in a fresh process (one thread): train, then score the EMA student; with
    ``curve_every`` also the EMA of every ``curve_every``-th step's checkpoint (FID against steps
    and training seconds)."""
    torch.set_num_threads(1)
    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller

    scales, w_eval = GUIDANCE[guidance]
    # the step count is in the name: a longer run of the same variant and seed must not overwrite it
    out = Path(out_root) / f"{hashlib.sha1(variant.encode()).hexdigest()[:8]}_{guidance}_s{seed}_{steps}"
    guided = [] if scales is None else [f"cfg_scales={scales}", f"sample.cfg_scale={w_eval}"]
    cfg = load_config(DistillConfig, None, [
        f"steps={steps}", f"seed={seed}", "threads=1", *guided,
        f"checkpoint_every={curve_every or 100000}", "keep_checkpoints=1000", *overrides])
    scales = [float(w) for w in cfg.cfg_scales]  # a variant may set its own guidance range
    w_eval = float(cfg.sample.cfg_scale)
    fresh, routes = run_sampler(cfg, guidance)
    start = time.perf_counter()
    d = Distiller(cfg)
    d.run(out, overwrite=True, progress=False)
    train_s = time.perf_counter() - start
    ref, clf = _fid_reference()

    shift = cfg.sample.student_shift
    scores, sweep = score_student(d.student_for_sampling(), d.encoder, scales, w_eval, n, ref, clf, shift, fresh, routes)
    curve = score_checkpoints(d, out, w_eval, n, ref, clf, shift, fresh, routes) if curve_every else []
    return {"variant": variant, "overrides": overrides, "guidance": guidance, "cfg_scales": scales,
            "eval_cfg": w_eval, "student_shift": shift, "fresh_noise": fresh,
            "routes": {str(k): v for k, v in routes.items()}, "seed": seed, "steps": steps, "trained_steps": d.step, "n": n, "train_s": train_s,
            "student": scores, "sweep": sweep, "curve": curve, "run": str(out), "noise": NOISE}


def teacher_sweep(n: int, steps: int = 16) -> dict:
    torch.set_num_threads(1)
    from tbcm.models.bundle import load_bundle
    from tbcm.models.teacher import Teacher
    from tbcm.previews import teacher_samples

    teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
    ref, clf = _fid_reference()
    rows = {}
    for w in TEACHER_CFGS:
        images = torch.cat([teacher_samples(teacher, [p], w, steps, n, first_seed=i * n, independent=True)
                            for i, p in enumerate(PROMPTS)])
        rows[str(w)] = _score(images, n, ref, clf)
    return {"variant": "teacher", "steps": steps, "n": n, "teacher": rows, "noise": NOISE}


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _targets(f1, a1, f2, f4, best_fid, best_adh) -> str:
    """Issue 9's targets on seed means: 1-step FID <= 1.3x the teacher's best, adherence >= the
    teacher's (at its best) minus 1 point, 2 steps <= 1 step, 4 steps <= 2 steps."""
    if not best_fid:
        return "-"
    m = statistics.mean
    checks = {"1-step FID": m(f1) <= 1.3 * best_fid, "adherence": m(a1) >= best_adh - 1,
              "2<=1": m(f2) <= m(f1), "4<=2": m(f4) <= m(f2)}
    return ", ".join(f"{k} {'met' if ok else 'missed'}" for k, ok in checks.items())


def _one_input(runs: list[dict]) -> str:
    """The 1-step sample at the one guidance input whose seed-mean FID is lowest (what a user who
    sets one guidance for the recipe gets), against the per-seed best input of the other columns."""
    ws = [w for w in runs[0]["sweep"] if all(w in r["sweep"] for r in runs)]
    fid = {w: statistics.mean(r["sweep"][w]["1.0"]["1"]["fid"] for r in runs) for w in ws}
    w = min(fid, key=fid.get)
    adh = [100 * r["sweep"][w]["1.0"]["1"]["adherence"] for r in runs]
    return f"w={float(w):g}: {_mean_sd([r['sweep'][w]['1.0']['1']['fid'] for r in runs])} at {_mean_sd(adh)}%"


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _shown(variant: str, runs: list[dict]) -> str:
    """The variant's name, with the student route its 2- and 4-step columns were scored on when
    that is not the teacher's (rows from before ``student_shift`` were all scored on 2.5)."""
    shifts = sorted({float(r.get("student_shift", 2.5)) for r in runs})
    shown = variant if shifts == [2.5] else f"{variant} (route {', '.join(f'{s:g}' for s in shifts)})"
    routes = {f"{k} steps " + "/".join(f"{a:g}" for a in v) for r in runs for k, v in r.get("routes", {}).items()}
    fresh = {float(r.get("fresh_noise", 1.0)) for r in runs} - {1.0}
    return shown + (f" ({', '.join(sorted(routes))})" if routes else "") + (
        f" (re-noising {', '.join(f'{a:g}' for a in sorted(fresh))} fresh)" if fresh else "")


def distinct_variants(rows: list[dict]) -> list[dict]:
    """Rows of one variant that are not seeds of one experiment get their own variant name: the
    longer runs of a variant trained for several step counts (``"<variant>, <steps> steps"``), and
    rows scored on per-image seeds beside rows of the old layout (``"... [per-image seeds]"``)."""
    counts: dict[str, set] = {}
    for r in rows:
        counts.setdefault(r["variant"], set()).add(r.get("steps"))
    out = []
    for r in rows:
        if r["variant"] != "teacher" and len(counts[r["variant"]]) > 1 and r["steps"] != min(counts[r["variant"]]):
            r = {**r, "variant": f"{r['variant']}, {r['steps']} steps"}
        if r["variant"] != "teacher" and r.get("noise") == NOISE:  # scored on the evaluation layout of 2026-12-02
            r = {**r, "variant": f"{r['variant']} [per-image seeds]"}
        out.append(r)
    return out


def report(rows: list[dict], suite: str, guidances: list[str]) -> str:
    """Markdown: the teacher sweep, then per guidance set a table of variants (mean ± sd over seeds)."""
    teacher = next((r for r in rows if r["variant"] == "teacher"), None)
    lines = []
    best_fid, best_w, best_adh = None, None, None
    if teacher is not None:
        t = teacher["teacher"]
        best_w = min(t, key=lambda w: t[w]["fid"])
        best_fid = t[best_w]["fid"]
        best_adh = 100 * t[best_w]["adherence"]
        lines += [f"Teacher, {teacher['steps']} steps, {teacher['n']} images per digit:", "",
                  "| guidance | " + " | ".join(t) + " |", "|---" * (len(t) + 1) + "|",
                  "| FID | " + " | ".join(f"{t[w]['fid']:.1f}" for w in t) + " |",
                  "| adherence | " + " | ".join(f"{t[w]['adherence']:.1%}" for w in t) + " |", "",
                  f"Teacher's best: FID {best_fid:.1f} at w={best_w}.", ""]
    for g in guidances:
        group = [r for r in rows if r.get("guidance") == g]
        if not group:
            continue
        scales, w_eval = GUIDANCE[g]
        if scales is None:  # the embedded default's own range and input, as its rows recorded them
            scales, w_eval = group[0]["cfg_scales"], group[0]["eval_cfg"]
        t_same = teacher["teacher"].get(str(w_eval)) if teacher else None
        own = sorted({str(r["cfg_scales"]) for r in group if r.get("cfg_scales", scales) != scales})
        lines += [f"Trained on cfg_scales {scales}" + (f" (or a variant's own: {', '.join(own)})" if own else "")
                  + f", evaluated at w={w_eval}"
                  + (f" (teacher 16 steps at w={w_eval}: FID {t_same['fid']:.1f}, "
                     f"adherence {t_same['adherence']:.1%})" if t_same else "") + ":", "",
                  "| variant | seeds | 1 step FID | 1 step adh. | 2 steps FID | 4 steps FID | 1-step / teacher best |",
                  "|---|---|---|---|---|---|---|"]
        variants = list(dict.fromkeys(r["variant"] for r in group))
        for variant in variants:
            runs = [r for r in group if r["variant"] == variant]
            f = {k: [r["student"][k]["fid"] for r in runs] for k in ("1", "2", "4")}
            adh = [100 * r["student"]["1"]["adherence"] for r in runs]
            ratio = f"{statistics.mean(f['1']) / best_fid:.2f}x" if best_fid else "-"
            lines.append(f"| {_shown(variant, runs)} | {len(runs)} | {_mean_sd(f['1'])} | {_mean_sd(adh)}% | {_mean_sd(f['2'])} | "
                         f"{_mean_sd(f['4'])} | {ratio} |")
        lines.append("")
        swept = [v for v in variants if all("sweep" in r for r in group if r["variant"] == v)]
        if swept:
            ranges = {str(r.get("cfg_scales", scales)) for r in group if r["variant"] in swept}
            within = f"in {scales}" if ranges == {str(scales)} else "within each variant's own training range"
            lines += [f"The same students at their best guidance input {within} (per run, per step count; "
                      "\"half fresh\": multi-step re-noising with fresh_noise=0.5):", "",
                      "| variant | 1 step FID | adh. | 2 steps | 4 steps | 2 steps, half fresh | 4 steps, half fresh "
                      "| adh. 4 steps half fresh | 1-step / teacher best | targets | 1 step at one input for every seed |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for variant in swept:
                runs = [r for r in group if r["variant"] == variant]

                def best(k: str, fresh: str = "1.0") -> tuple[list[float], list[float]]:
                    picks = [min((r["sweep"][w][fresh][k] for w in r["sweep"]), key=lambda x: x["fid"]) for r in runs]
                    return [x["fid"] for x in picks], [100 * x["adherence"] for x in picks]

                f1, a1 = best("1")
                f4h, a4h = best("4", "0.5")
                ratio = f"{statistics.mean(f1) / best_fid:.2f}x" if best_fid else "-"
                f2, f4 = best("2")[0], best("4")[0]
                lines.append(f"| {_shown(variant, runs)} | {_mean_sd(f1)} | {_mean_sd(a1)}% | {_mean_sd(f2)} | "
                             f"{_mean_sd(f4)} | {_mean_sd(best('2', '0.5')[0])} | {_mean_sd(f4h)} | "
                             f"{_mean_sd(a4h)}% | {ratio} | {_targets(f1, a1, f2, f4, best_fid, best_adh)} | "
                             f"{_one_input(runs)} |")
            lines.append("")
    steps = sorted({r["steps"] for r in rows if "steps" in r and r["variant"] != "teacher"})
    train_s = [r["train_s"] for r in rows if "train_s" in r]
    lines.append(f"`python benchmarks/recipe_ablation.py --suite {suite}`; {platform.machine()} "
                 f"({torch.get_num_threads()} threads available, one per run), torch {torch.__version__}, "
                 f"{datetime.date.today()}; {steps} training steps"
                 + (f", {statistics.mean(train_s):.0f} s of training per run on average" if train_s else "") + ".")
    return "\n".join(lines)


def curve_table(rows: list[dict], guidances: list[str] | None = None) -> str:
    """The points :func:`plot_curves` draws, as a table: per run with a curve, each checkpoint's
    training step and seconds and its FID / adherence at 1, 2 and 4 steps."""
    lines = ["| run | step | training s | 1 step | 2 steps | 4 steps |", "|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("curve") or (guidances is not None and r.get("guidance") not in guidances):
            continue
        for c in r["curve"]:
            cells = " | ".join(f"{c['student'][k]['fid']:.2f} ({100 * c['student'][k]['adherence']:.1f}%)"
                               for k in ("1", "2", "4"))
            secs = "-" if c.get("seconds") is None else f"{c['seconds']:.0f}"
            lines.append(f"| {r['variant']} seed {r['seed']} | {c['step']} | {secs} | {cells} |")
        lines.append(f"| {r['variant']} seed {r['seed']}: trained | {r.get('trained_steps', r['steps'])} | "
                     f"{r['train_s']:.0f} (whole run) | - | - | - |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path, best_fid: float | None, guidances: list[str] | None = None) -> bool:
    """FID (1, 2, 4 steps) against training steps and seconds, one line per run with a curve
    (of the ``guidances`` sets only, when given)."""
    runs = [r for r in rows if r.get("curve") and (guidances is None or r.get("guidance") in guidances)]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # one colour per run (step counts share it, told apart by marker and line style)
    colours = plt.get_cmap("tab20" if len(runs) > 10 else "tab10")
    for i, r in enumerate(runs):
        label = f"{r['variant']} ({r['guidance']}, seed {r['seed']})"
        for k, style in (("1", "o-"), ("2", "s--"), ("4", "^:")):
            ys = [c["student"][k]["fid"] for c in r["curve"]]
            for ax, key in zip(axes, ("step", "seconds")):
                xs = [c[key] for c in r["curve"]]
                ax.plot(xs, ys, style, ms=3, color=colours(i % colours.N),
                        label=f"{label}, {k} step{'s' if k != '1' else ''}")
    for ax, xlabel in zip(axes, ("training steps", "training seconds (one CPU thread)")):
        if best_fid:
            ax.axhline(best_fid, color="k", lw=0.8)
            ax.axhline(1.3 * best_fid, color="k", lw=0.8, ls="--")
        ax.set(xlabel=xlabel, ylabel="FID (digit features)", yscale="log")
    axes[1].legend(fontsize=6, loc="upper right")
    axes[0].set_title("solid: teacher's best 16-step FID; dashed: 1.3x", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_tradeoff(rows: list[dict], path: Path, teacher: dict | None, guidances: list[str] | None = None) -> bool:
    """The 1-step sample's FID against its adherence, one line per variant through its guidance
    inputs (seed means at each input; the variant's own training range), the teacher's 16-step
    sweep beside them, and the issue's target box (FID <= 1.3x the teacher's best, adherence >=
    the teacher's best minus 1 point)."""
    runs = [r for r in rows if r.get("sweep") and (guidances is None or r.get("guidance") in guidances)]
    if not runs or teacher is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = teacher["teacher"]
    best_w = min(t, key=lambda w: t[w]["fid"])
    best_fid, best_adh = t[best_w]["fid"], 100 * t[best_w]["adherence"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tw = [w for w in t if 0.75 <= float(w) <= 2.0]
    ax.plot([100 * t[w]["adherence"] for w in tw], [t[w]["fid"] for w in tw], "k*-", ms=7, lw=0.8,
            label="teacher, 16 steps")
    for w in tw:
        ax.annotate(f"{float(w):g}", (100 * t[w]["adherence"], t[w]["fid"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    xs, ys = [100 * t[w]["adherence"] for w in tw], [t[w]["fid"] for w in tw]  # the axes fit every point
    for variant in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == variant]
        ws = [w for w in group[0]["sweep"] if all(w in r["sweep"] for r in group)]
        fid = [statistics.mean(r["sweep"][w]["1.0"]["1"]["fid"] for r in group) for w in ws]
        adh = [statistics.mean(100 * r["sweep"][w]["1.0"]["1"]["adherence"] for r in group) for w in ws]
        xs, ys = xs + adh, ys + fid
        line, = ax.plot(adh, fid, "o-", ms=4, label=f"{variant} ({len(group)} seeds), 1 step")
        for w, x, y in zip(ws, adh, fid):
            ax.annotate(f"{float(w):g}", (x, y), fontsize=6, color=line.get_color(), xytext=(3, -8),
                        textcoords="offset points")
    ax.fill_between([best_adh - 1, 100], 0, 1.3 * best_fid, color="g", alpha=0.12, label="the issue's target")
    ax.set(xlabel="adherence (%)", ylabel="FID (digit features)", xlim=(min(xs + [best_adh - 1]) - 0.5, 100.2),
           ylim=(0, 1.08 * max(ys + [1.3 * best_fid])),
           title="1-step student at each guidance input (labels) against the teacher's 16-step sweep")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), default="faithful")
    ap.add_argument("--guidance", default="low,high", help="guidance sets to run: " + ", ".join(GUIDANCE))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--n", type=int, default=100, help="images per digit in every evaluation")
    ap.add_argument("--workers", type=int, default=2, help="runs in parallel (one CPU thread each)")
    ap.add_argument("--only", default=None, help="run only the variants whose name is in this |-separated list")
    ap.add_argument("--curve-every", type=int, default=0, help="also score the EMA every N steps (checkpoints)")
    ap.add_argument("--results", default=None, help="JSON-lines file (default benchmarks/results/SUITE.jsonl)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "recipe_ablation"))
    ap.add_argument("--report", action="store_true", help="only print the tables from the results file")
    ap.add_argument("--rescore", action="store_true", help="add the guidance sweep to rows without it, then report")
    ap.add_argument("--resample", action="store_true",
                    help="re-score the 'default' rows whose few-step sampler (routes, re-noising share) is no "
                         "longer their config's: final students and curve checkpoints, no training; then report")
    ap.add_argument("--curve-table", action="store_true",
                    help="with --report: also print the curves' points (FID and adherence per checkpoint, training seconds)")
    ap.add_argument("--write-doc", action="store_true", help="write the tables into docs/results.md")
    ap.add_argument("--baseline", action="append", default=[], metavar="FILE|VARIANT",
                    help="also report VARIANT's rows from another results file (e.g. the faithful suite's)")
    args = ap.parse_args()
    path = Path(args.results or ROOT / "benchmarks" / "results" / f"{args.suite}.jsonl")
    guidances = [g for g in args.guidance.split(",") if g]
    seeds = [int(s) for s in args.seeds.split(",")]
    if (args.rescore or args.resample) and not path.is_file():
        ap.error(f"no results file {path}: --rescore / --resample re-score the rows of a finished run (--results FILE)")
    if args.rescore:
        rescore(path, args.n)
    elif args.resample:
        resample(path, args.workers)
    elif not args.report:
        done = {run_key(r["variant"], r["guidance"], r["seed"], r["steps"]) for r in load_results(path)
                if r["variant"] != "teacher"}
        have_teacher = any(r["variant"] == "teacher" and r["n"] == args.n for r in load_results(path))
        # seed-major: every variant's first seed lands before any second seed
        only = set(args.only.split("|")) if args.only else None
        jobs = [(v, o, g, s) for s in seeds for g in guidances for v, o in SUITES[args.suite].items()
                if run_key(v, g, s, args.steps) not in done and (only is None or v in only)]
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
            futures = {}
            if not have_teacher:
                futures[pool.submit(teacher_sweep, args.n)] = "teacher sweep"
            for v, o, g, s in jobs:
                futures[pool.submit(train_and_eval, v, o, g, s, args.steps, args.n, args.runs, args.curve_every)] = f"{v} {g} seed {s}"
            for fut in cf.as_completed(futures):
                row = fut.result()
                append_result(path, row)
                summary = {k: round(x["fid"], 1) for k, x in row.get("student", row.get("teacher", {})).items()}
                print(f"done: {futures[fut]}: FID {summary}", flush=True)
    rows = load_results(path)
    for spec in args.baseline:
        file, variant = spec.split("|", 1)
        extra = [r for r in load_results(Path(file)) if r["variant"] == variant]
        rows = [*extra, *rows]  # first: the table lists it first
    rows = distinct_variants(rows)
    text = report(rows, args.suite, guidances)
    if args.curve_table:
        text += "\n\nCurve points (FID (adherence) at each checkpoint's EMA):\n\n" + curve_table(rows, guidances)
    teacher = next((r for r in rows if r["variant"] == "teacher"), None)
    best = min(v["fid"] for v in teacher["teacher"].values()) if teacher else None
    png = ROOT / "docs" / "img" / f"recipe_{args.suite}_curves.png"
    if args.write_doc and plot_curves(rows, png, best, guidances):
        text += f"\n\n![FID against training steps and seconds](img/{png.name})"
    trade = png.with_name(f"recipe_{args.suite}_tradeoff.png")
    if args.write_doc and plot_tradeoff(rows, trade, teacher, guidances):  # any suite whose runs were swept
        text += f"\n\n![1-step FID against adherence, per guidance input](img/{trade.name})"
    print(text)
    if args.write_doc:
        from results_doc import write_block

        write_block(f"recipe_{args.suite}", text, heading=f"## Recipe ablation: {args.suite}")


if __name__ == "__main__":
    main()
