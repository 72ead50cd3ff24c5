"""How much of a digits FID is the evaluation's own noise: the same models scored on many draws.

Each draw is a fresh set of 100 images per digit (image j of digit i from seed ``base + i n + j``,
``base = draw * 10 n``: disjoint seeds, each image independent, as `tbcm eval` draws them). The
teacher (16 steps) and each student (1, 2 and 4 steps on its saved route) are scored on the same
draws, so a draw's teacher/student ratio is paired. Prints per model the mean and spread of FID and
adherence over the draws, and per group of students (a recipe's training seeds) the ratio of the
mean 1-step FID to the teacher's mean best FID -- the quality figure with the evaluation noise
averaged out -- and the issue's targets on those means (1-step FID <= 1.3x the teacher's best,
adherence >= the teacher's best minus 1 point, 2 steps <= 1, 4 <= 2).

    python benchmarks/eval_noise.py --draws 10 --cfg 1.5 \\
        --group "default=/work/runs/steady/e78f8667_low_s0,/work/runs/steady/e78f8667_low_s1,..."
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch

from tbcm.errors import UserError
from tbcm.evaluation.classifier import digits_split, load_classifier
from tbcm.evaluation.evaluate import PROMPTS
from tbcm.evaluation.metrics import FIDReference, adherence
from tbcm.models.adapter import valid_interval
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.previews import student_samples, teacher_samples
from tbcm.sampling import fresh_noise_share, parse_routes, saved_routes

STEPS = (1, 2, 4)


def _score(images: torch.Tensor, n: int, ref, clf) -> tuple[float, float]:
    labels = torch.arange(10).repeat_interleave(n)
    return float(ref(images)), float(adherence(images, labels, clf))


def teacher_draws(teacher, cfgs: list[float], draws: int, n: int, ref, clf, steps: int = 16) -> dict:
    """``{w: [(fid, adherence) per draw]}`` for the teacher at ``steps`` steps (16: the issue's "best")."""
    out = {}
    for w in cfgs:
        out[w] = [_score(torch.cat([teacher_samples(teacher, [p], w, steps, n, first_seed=d * 10 * n + i * n,
                                                    independent=True) for i, p in enumerate(PROMPTS)]), n, ref, clf)
                  for d in range(draws)]
    return out


def student_draws(folder: str, w: float, draws: int, n: int, ref, clf, shift: float | None,
                  fresh_noise: float | None = None, steps=STEPS, first_draw: int = 0,
                  routes: dict | None = None) -> dict:
    """``{steps: [(fid, adherence) per draw]}`` for the student in ``folder`` at guidance input ``w``
    (``fresh_noise``: the multi-step re-noising, :func:`tbcm.sampling.student_sample`), on draws
    ``first_draw .. first_draw + draws - 1``; ``fresh_noise`` None: the one saved with the student;
    ``routes``: explicit routes per step count (:func:`tbcm.sampling.saved_routes`), None: the saved ones."""
    b = load_bundle(Path(folder) / "student" if not folder.rstrip("/").endswith("student") else folder,
                    expect_kind="student")
    student = Student.from_bundle(b).eval()
    route = float(shift if shift is not None else b.meta.extra.get("shift", 2.5))
    fresh_noise = fresh_noise_share(b.meta.extra, fresh_noise)
    routes = saved_routes(b.meta.extra, routes, shift)  # as tbcm eval: a shift alone drops the saved routes
    return {k: [_score(torch.cat([student_samples(student, b.encoder, [p], w, k, n, route,
                                                  first_seed=d * 10 * n + i * n, independent=True,
                                                  fresh_noise=fresh_noise, routes=routes)
                                  for i, p in enumerate(PROMPTS)]), n, ref, clf)
                for d in range(first_draw, first_draw + draws)]
            for k in steps}


def _ms(values: list[float], fmt: str = "{:.2f}") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def plot(data: dict, path: Path) -> None:
    """Every draw's FID per model (teacher at each guidance, each student at 1 / 2 / 4 steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [(f"teacher w={float(w):g}", [f for f, _ in rows]) for w, rows in data["teacher"].items()]
    for name, runs in data["groups"].items():
        for run, per in runs.items():
            seed = Path(run).name.split("_s")[-1].split("_")[0]
            cols += [(f"{name} s{seed} {k} st", [f for f, _ in per[str(k)]]) for k in STEPS]
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * len(cols)), 4))
    for i, (_, vals) in enumerate(cols):
        ax.plot([i] * len(vals), vals, "o", ms=3, alpha=0.6, color="C0" if i < len(data["teacher"]) else "C1")
        ax.plot([i - 0.3, i + 0.3], [statistics.mean(vals)] * 2, "k-", lw=1)
    ax.set_xticks(range(len(cols)), [c for c, _ in cols], rotation=75, ha="right", fontsize=6)
    ax.set(ylabel="FID (digit features)",
           title=f"one dot per evaluation draw ({data['draws']} draws of {data['n']} images per digit); bar: mean")
    ax.title.set_fontsize(8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def steps_plot(files: list[Path], path: Path, teacher_best: float | None) -> None:
    """FID against the student's step count (1, 2, 4), one panel line per group of --json files
    (mean over draws, then over seeds; a thin line per seed), the teacher's best as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict = {}
    for f in files:
        for _, d in _scored_sets(json.loads(f.read_text())):
            for name, runs in d["groups"].items():
                groups.setdefault(name, {}).update(runs)
    for i, (name, runs) in enumerate(groups.items()):
        per_seed = [[statistics.mean(fid for fid, _ in per[str(k)]) for k in STEPS] for per in runs.values()]
        for seed in per_seed:
            ax.plot(STEPS, seed, "-", color=f"C{i}", lw=0.6, alpha=0.4)
        ax.plot(STEPS, [statistics.mean(v) for v in zip(*per_seed)], "o-", color=f"C{i}", lw=2,
                label=f"{name} ({len(per_seed)} seeds)")
    if teacher_best is not None:
        ax.axhline(teacher_best, color="k", ls="--", lw=1, label=f"teacher's best, 16 steps ({teacher_best:.2f})")
    ax.set(xlabel="student sampling steps (= network calls)", ylabel="FID (digit features), mean over draws",
           xticks=list(STEPS))
    ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scored_sets(data, where: str = ""):
    """Every ``{"teacher", "groups", ...}`` object in a --json file, or in a file that nests several
    (``{"label": {...}, ...}``), with where it sat."""
    if isinstance(data, dict) and "groups" in data and "teacher" in data:
        yield where, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _scored_sets(v, f"{where} {k}".strip())


def merged(sets: list[dict]) -> tuple[dict, dict, int, int, int]:
    """One report's inputs from scored sets (in-memory or read back from --json files):
    ``(teacher {w: [(fid, adh)]}, groups {(name, cfg): {run: {"1": [...], "2": ..., "4": ...}}},
    draws, n, teacher_steps)``. A recipe scored in several sets (its seeds scored by separate processes) is one
    group; the sets must be on the same draws (the teacher scored in two is the same there)."""
    sets = [json.loads(json.dumps(d)) for d in sets]  # one key type: JSON's strings
    draws, n = sets[0]["draws"], sets[0]["n"]
    teacher, groups, samplers = {}, {}, {}
    teacher_steps = None
    for d in sets:
        if (d["draws"], d["n"]) != (draws, n):
            raise ValueError(f"scored sets on different draws: {d['draws']} x {d['n']} against {draws} x {n}")
        if d["teacher"]:  # files from before --teacher-steps scored the teacher at 16 steps
            steps = d.get("teacher_steps", 16)
            if teacher_steps not in (None, steps):
                raise ValueError(f"the teacher scored at {teacher_steps} and at {steps} steps: report one step count at a time")
            teacher_steps = steps
        for w, rows in d["teacher"].items():
            w = f"{float(w):g}"
            if w in teacher and any(abs(a[0] - b[0]) > 1e-6 for a, b in zip(teacher[w], rows)):
                raise ValueError(f"the teacher at w={w} differs between the sets: not the same draws")
            teacher[w] = rows
        for name, runs in d["groups"].items():
            key = (name, float(d.get("cfg", "nan")))
            # one group is one sampler: seeds scored on another route or re-noising are another recipe
            sampler = (d.get("shift"), d.get("fresh_noise"), d.get("routes"))
            if samplers.setdefault(key, sampler) != sampler:
                raise ValueError(f"group {name!r} scored with shift / fresh noise / routes {samplers[key]} and {sampler}: "
                                 "give each sampler its own group name")
            groups.setdefault(key, {}).update(runs)
    return teacher, groups, draws, n, teacher_steps or 16


def print_report(teacher: dict, groups: dict, draws: int, n: int, teacher_steps: int = 16) -> None:
    """The per-model table and the per-recipe table with the issue's targets (the inputs of
    :func:`merged`)."""
    if not teacher:  # scored with --teacher-cfg none: the ratios need a file that holds the teacher
        raise ValueError("no teacher in these scores: add to --report a --json file of the same draws that has it")
    # the teacher's best guidance on the mean over draws; per draw, its FID there
    best_w = min(teacher, key=lambda w: statistics.mean(f for f, _ in teacher[w]))
    best = [f for f, _ in teacher[best_w]]
    print(f"{draws} draws of {n} images per digit (per-image seeds); {platform.machine()}, "
          f"torch {torch.__version__}, {datetime.date.today()}\n")
    print("| model | steps | guidance | FID over draws | adherence over draws | FID range |")
    print("|---|---|---|---|---|---|")
    for w, rows in teacher.items():
        f = [x for x, _ in rows]
        print(f"| teacher | {teacher_steps} | {w} | {_ms(f)} | {_ms([a * 100 for _, a in rows], '{:.1f}')}% | "
              f"{min(f):.2f} - {max(f):.2f} |")
    for (name, cfg), runs in groups.items():
        for run, per in runs.items():
            for k, rows in per.items():
                f = [x for x, _ in rows]
                print(f"| {name}: {Path(run).name} | {k} | {cfg:g} | {_ms(f)} | "
                      f"{_ms([a * 100 for _, a in rows], '{:.1f}')}% | {min(f):.2f} - {max(f):.2f} |")
    print(f"\nTeacher's best on the mean over draws: w={best_w}, FID {_ms(best)}.\n")
    print("| recipe | guidance | seeds | 1 step FID (mean over draws, then over seeds) | adherence | 2 steps | "
          "adh. | 4 steps | adh. | FID / teacher best (1 / 2 / 4 steps) | 2 <= 1 | 4 <= 2 | "
          "paired ratio per draw (1 step) | targets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    tb = statistics.mean(best)
    tb_adh = statistics.mean(a for _, a in teacher[best_w]) * 100  # the adherence target: this minus 1 point
    for (name, cfg), runs in groups.items():
        per_seed = {k: [statistics.mean(f for f, _ in per[str(k)]) for per in runs.values()] for k in STEPS}
        adh_k = {k: [statistics.mean(a for _, a in per[str(k)]) * 100 for per in runs.values()] for k in STEPS}
        adh = adh_k[1]
        paired = [statistics.mean(per["1"][d][0] for per in runs.values()) / best[d] for d in range(draws)]
        m = {k: statistics.mean(v) for k, v in per_seed.items()}
        print(f"| {name} | {cfg:g} | {len(runs)} | {_ms(per_seed[1])} | {_ms(adh, '{:.1f}')}% | {_ms(per_seed[2])} | "
              f"{statistics.mean(adh_k[2]):.1f}% | {_ms(per_seed[4])} | {statistics.mean(adh_k[4]):.1f}% | "
              f"{' / '.join(f'{m[k] / tb:.2f}x' for k in STEPS)} | {'met' if m[2] <= m[1] else 'missed'} | "
              f"{'met' if m[4] <= m[2] else 'missed'} | {_ms(paired)}x | "
              f"FID {'met' if m[1] <= 1.3 * tb else 'missed'}, adherence "
              f"{'met' if statistics.mean(adh) >= tb_adh - 1 else 'missed'} (>= {tb_adh - 1:.1f}%) |")


def tradeoff(files: list[Path], path: Path) -> None:
    """1-step FID against adherence, one small dot per student (its mean over the draws), one large
    marker per recipe (the mean over its seeds), the teacher at each guidance scale, and the
    issue's target box (FID <= 1.3x the teacher's best, adherence >= its best minus 1 point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    teacher, groups, *_ = merged([d for f in files for _, d in _scored_sets(json.loads(f.read_text()))])
    means = {w: (statistics.mean(f for f, _ in r), 100 * statistics.mean(a for _, a in r)) for w, r in teacher.items()}
    teacher_best = min(means.values())  # (FID, adherence) at the lowest mean FID
    for w, (fid, adh) in means.items():
        ax.plot(adh, fid, "k*", ms=11)
        ax.annotate(f"teacher w={w}", (adh, fid), fontsize=7, xytext=(4, 3), textcoords="offset points")
    xs, ys = [], []
    for k, ((name, cfg), runs) in enumerate(groups.items()):
        pts = [(100 * statistics.mean(a for _, a in per["1"]), statistics.mean(f for f, _ in per["1"]))
               for per in runs.values()]
        color = plt.cm.tab20(k % 20)
        ax.plot([a for a, _ in pts], [f for _, f in pts], "o", ms=3.5, alpha=0.5, color=color)
        xs += [a for a, _ in pts]
        ys += [f for _, f in pts]
        label = f"{name} (w={cfg:g}, {len(pts)} seed{'s' if len(pts) > 1 else ''})"
        ax.plot(statistics.mean(a for a, _ in pts), statistics.mean(f for _, f in pts), "D", ms=7,
                color=color, label=label)
    fid_line, adh_line = 1.3 * teacher_best[0], teacher_best[1] - 1
    ax.axhline(fid_line, color="g", lw=0.8, ls="--")
    ax.axvline(adh_line, color="g", lw=0.8, ls="--")
    ax.fill_between([adh_line, 100], 0, fid_line, color="g", alpha=0.08, label="target box (1 step)")
    ax.set(xlabel="adherence, % (mean over draws)", ylabel="1-step FID (mean over draws)",
           title="1-step students on ten draws: small dots seeds, diamonds recipe means")
    ax.set_xlim(min(xs + [adh_line]) - 0.5, 100)
    ax.set_ylim(min(ys + [teacher_best[0]]) - 1, max(ys + [fid_line]) + 1)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", default=[], metavar="NAME=RUN,RUN,...",
                    help="a recipe's students (its training seeds), scored together")
    ap.add_argument("--draws", type=int, default=10, help="evaluation draws of 100 images per digit each")
    ap.add_argument("--n", type=int, default=100, help="images per digit in each draw")
    ap.add_argument("--cfg", type=float, default=1.5, help="the students' guidance input")
    ap.add_argument("--teacher-cfg", default="0.75,1,1.25",
                    help="the teacher's guidance scales (--teacher-steps); 'none' scores only the students (the "
                         "teacher is deterministic on given draws: --report joins these scores with a file that has it)")
    ap.add_argument("--teacher-steps", type=int, default=16,
                    help="the teacher's sampling steps (16: the issue's teacher's best; more: how far its own ODE goes)")
    ap.add_argument("--teacher-interval", default=None, metavar="LO,HI",
                    help="guide the teacher only at angles in (LO, HI] rad (default: at every angle)")
    ap.add_argument("--shift", type=float, default=None, help="the students' route (default: each one's saved)")
    ap.add_argument("--fresh-noise", type=float, default=None,
                    help="the students' multi-step re-noising: 1 = fresh noise (sCM), 0 = the noise implied by the "
                         "state (default: each one's saved)")
    ap.add_argument("--routes", default=None, metavar="STEPS:A/B/..",
                    help="the students' explicit routes, e.g. 4:0.337/0.06/0.02, or none (default: each one's "
                         "saved, unless --shift is given)")
    ap.add_argument("--json", default=None, help="also write every draw's scores here")
    ap.add_argument("--plot", nargs=2, metavar=("JSON", "PNG"), default=None,
                    help="only draw the per-draw FIDs of a --json file into PNG")
    ap.add_argument("--tradeoff", nargs="+", metavar="PNG JSON", default=None,
                    help="only draw the 1-step FID against adherence of --json files into PNG")
    ap.add_argument("--steps-plot", nargs="+", metavar="PNG JSON", default=None,
                    help="only draw FID against step count of the groups in --json files into PNG")
    ap.add_argument("--teacher-best", type=float, default=None, help="with --steps-plot: the line to draw")
    ap.add_argument("--report", nargs="+", metavar="JSON", default=None,
                    help="only print the tables of --json files (a recipe's seeds scored in several files: one group)")
    args = ap.parse_args()
    try:
        if args.report:
            print_report(*merged([d for f in args.report for _, d in _scored_sets(json.loads(Path(f).read_text()))]))
            return
        if args.steps_plot:
            if len(args.steps_plot) < 2:
                ap.error("--steps-plot PNG JSON [JSON ...]: name the picture, then at least one --json file")
            steps_plot([Path(f) for f in args.steps_plot[1:]], Path(args.steps_plot[0]), args.teacher_best)
            return
        if args.tradeoff:
            if len(args.tradeoff) < 2:
                ap.error("--tradeoff PNG JSON [JSON ...]: name the picture, then at least one --json file")
            tradeoff([Path(f) for f in args.tradeoff[1:]], Path(args.tradeoff[0]))
            return
    except (OSError, ValueError, KeyError, IndexError) as e:  # a missing, foreign or mismatched --json file
        ap.error(f"cannot read the scores: {type(e).__name__}: {e}; pass --json files of this benchmark, on the same draws")
    if args.plot:
        plot(json.loads(Path(args.plot[0]).read_text()), Path(args.plot[1]))
        return
    # parse and check the groups before minutes of teacher sampling; a name may hold "=" (the
    # overrides it was trained with), a run folder rarely does: split at the last one
    try:
        fresh_noise_share({}, args.fresh_noise)  # before minutes of sampling
        routes = parse_routes(args.routes) if args.routes is not None else None
    except UserError as e:
        ap.error(str(e))
    if args.teacher_steps < 1:
        ap.error(f"--teacher-steps {args.teacher_steps}: the teacher needs at least 1 sampling step (16 is the issue's)")
    if args.draws < 1 or args.n < 2:
        ap.error(f"--draws {args.draws} --n {args.n}: need at least 1 draw of at least 2 images per digit")
    specs = []
    for spec in args.group:
        name, sep, runs = spec.rpartition("=")
        folders = [r for r in runs.split(",") if r]
        if not sep or not name or not folders:
            ap.error(f"--group {spec!r}: expected NAME=RUN,RUN,... (run folders of tbcm distill)")
        missing = [r for r in folders if not Path(r).is_dir()]
        if missing:
            ap.error(f"--group {name!r}: no run folder {missing[0]!r}; pass the --out folders of tbcm distill")
        specs.append((name, folders))
    interval = None
    if args.teacher_interval:
        try:
            interval = tuple(float(v) for v in args.teacher_interval.split(","))
        except ValueError:
            interval = ()
        if not valid_interval(interval):
            ap.error(f"--teacher-interval {args.teacher_interval!r}: expected LO,HI angles with 0 <= LO < HI <= pi/2, e.g. 0,0.5")
    try:
        cfgs = [] if args.teacher_cfg == "none" else [float(w) for w in args.teacher_cfg.split(",")]
    except ValueError:
        ap.error(f"--teacher-cfg {args.teacher_cfg!r}: expected guidance scales like 1,1.25 or 'none'")
    torch.set_num_threads(1)
    clf = load_classifier()
    ref = FIDReference(digits_split().heldout_images, clf)
    with torch.no_grad():
        teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
        teacher.guidance_interval = interval
        t = teacher_draws(teacher, cfgs, args.draws, args.n, ref, clf, args.teacher_steps)
        groups = {}
        for name, folders in specs:
            groups[name] = {r: student_draws(r, args.cfg, args.draws, args.n, ref, clf, args.shift,
                                                 args.fresh_noise, routes=routes)
                            for r in folders}
    scored = {"teacher": {str(w): v for w, v in t.items()}, "groups": groups, "draws": args.draws,
              "n": args.n, "cfg": args.cfg, "teacher_steps": args.teacher_steps,
              "teacher_interval": list(interval or []), "shift": args.shift,
              "fresh_noise": args.fresh_noise, "routes": None if routes is None else {str(k): v for k, v in routes.items()}}
    if args.json:  # first: without a teacher the report below cannot be printed
        Path(args.json).write_text(json.dumps(scored, indent=1))
    if t:
        print_report(*merged([scored]))
    else:
        print(f"students scored without the teacher{' into ' + args.json if args.json else ''}: "
              "print the tables with --report and a --json file of the same draws that has the teacher")


if __name__ == "__main__":
    main()
