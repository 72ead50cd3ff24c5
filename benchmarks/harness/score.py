"""The harness's one scorer: a run folder on evaluation draws of a split, through ``tbcm eval``.

Every number the benchmarks store comes from here, and :func:`tbcm.evaluation.evaluate.evaluate`
is called nowhere else. The judge follows the model, as in ``tbcm eval``: the digit classifier for
1x8x8 models, the scenes judge (seen and held-out prompts) for 3x32x32 ones.

- :func:`score_run`: the student at 1, 2, 4 steps on draws of a split (``evaluate(split=, draw=)``,
  the sampler saved with the student), with the teacher as copied, fidelity to it and the data floor;
- :func:`teacher_best_record`: the teacher at its best, **chosen once per teacher**: the grid
  (:class:`tbcm.evaluation.teachers.TeacherGrid`, ~30 min on one CPU thread for the digits at 100
  images per digit) runs on one tune draw, and the chosen setting and its tune scores become a
  ``teacher_best`` record of the store, found again (not recomputed) by every later call with the
  same teacher files, grid, sampler, tune draw and images per class;
- :func:`score_teacher`: that chosen setting alone on the reported draws (cheap: one setting).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from tbcm.evaluation import splits

SAMPLER_KEYS = ("cfg_scale", "shift", "fresh_noise", "routes")
# evaluate's name of each sampler override
_EVALUATE_NAMES = {"cfg_scale": "cfg_scale", "shift": "student_shift", "fresh_noise": "fresh_noise",
                   "routes": "student_routes"}
SETTING_KEYS = ("steps", "shift", "cfg", "guidance_interval")  # a TeacherSetting.to_dict()


def _evaluate_draw(run_dir: Path, split: str, draw: int, steps, n, sampler: dict, teacher: bool,
                   teacher_samples: dict | None = None, device: str = "cpu") -> dict:
    """``tbcm eval`` of one draw of ``split``; ``evaluate`` reads the sampler saved with the student
    (``sampler``: overrides of it, ``None`` values keep the saved one)."""
    from tbcm.evaluation.evaluate import evaluate

    overrides = {_EVALUATE_NAMES[k]: v for k, v in sampler.items() if v is not None}
    return evaluate(run_dir, student_steps=list(steps), n_per_class=n, split=split, draw=draw,
                    teacher_copied=teacher, fidelity=teacher, teacher_samples=teacher_samples, device=device,
                    **overrides)


def score_run(run_dir: str | Path, split: str, draws, steps=(1, 2, 4), n: int | None = None,
              sampler: dict | None = None, teacher: bool = True, teacher_samples: dict | None = None,
              device: str = "cpu") -> dict:
    """Scores of the student in ``run_dir`` (a ``tbcm distill`` run folder, or a folder holding a
    ``student/`` and a ``config.yaml``) at ``steps``, on evaluation ``draws`` of ``split``, ``n``
    images per class (default: the judge's). ``sampler``: overrides of the saved sampler
    (``cfg_scale``, ``shift``, ``fresh_noise``, ``routes``). ``teacher``: also the teacher as copied
    and the fidelity to it (``evaluate(teacher_copied=True, fidelity=True)``); a sweep over sampler
    settings or checkpoints passes ``False``, since it would sample the same teacher images again
    for every point, or keeps them in ``teacher_samples`` (a dict passed to every call on the same
    teacher, :func:`tbcm.evaluation.evaluate.evaluate`'s), where they are sampled once.

    Returns ``{"split", "draws", "seeds", "n_per_class", "suite", "sampler", "student": {steps:
    {"fid", "adherence", ...}}, "fidelity": {steps: {"latent_mse", "feature_distance",
    "label_agreement", "fid_to_teacher", "spectrum_ratio" (per band, low to high), ...}},
    "teacher_as_copied", "data_floor", "per_draw": [...]}``:
    the means over the draws (:func:`summary_of`), and each draw's ``evaluate`` result whole.
    """
    draws = [int(d) for d in draws]
    if not draws:
        raise ValueError("score_run needs at least one draw")
    seeds = [splits.draw_seed(split, d) for d in draws]  # refuses an unknown split or draw first
    sampler = dict(sampler or {})
    unknown = set(sampler) - set(SAMPLER_KEYS)
    if unknown:
        raise ValueError(f"unknown sampler settings {sorted(unknown)}: use {', '.join(SAMPLER_KEYS)}")
    run_dir = Path(run_dir)
    per_draw = [_evaluate_draw(run_dir, split, d, steps, n, sampler, teacher, teacher_samples, device) for d in draws]
    return {"split": split, "draws": draws, "seeds": seeds, **summary_of(per_draw),
            "sampler": per_draw[0]["sampler"], "per_draw": per_draw}


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def mean_of(items: list[dict]) -> dict:
    """The mean over draws of ``evaluate`` entries: numbers averaged (kept as they are when every
    draw has the same), lists of numbers of one length (the spectrum ratio per band) averaged
    element-wise, nested dicts (the scenes' seen / held-out) likewise, other values kept when every
    draw agrees; standard errors over one draw's images (``*_se``) are not averaged."""
    out = {}
    for k, v in items[0].items():
        values = [it.get(k) for it in items]
        if k.endswith("_se"):
            continue
        if isinstance(v, dict) and all(isinstance(x, dict) for x in values):
            out[k] = mean_of(values)
        elif all(_is_number(x) for x in values):
            out[k] = v if all(x == v for x in values) else statistics.fmean(float(x) for x in values)
        elif all(x == v for x in values):
            out[k] = v
        elif (isinstance(v, list) and all(isinstance(x, list) and len(x) == len(v) and all(map(_is_number, x))
                                          for x in values)):
            out[k] = [statistics.fmean(float(x) for x in column) for column in zip(*values)]
    return out


def summary_of(per_draw: list[dict]) -> dict:
    """Means over draws of ``evaluate`` results: the student per step count, the fidelity to the
    teacher as copied per step count, the teacher as copied (its setting and scores; the guidance
    sweep stays in ``per_draw``) and the data floor, where present."""
    first = per_draw[0]
    out = {"n_per_class": first["n_per_class"], "suite": first["suite"],
           "student": {k: mean_of([r["student"][k] for r in per_draw]) for k in first["student"]}}
    if "fidelity" in first:
        out["fidelity"] = {k: mean_of([r["fidelity"]["steps"][k] for r in per_draw])
                           for k in first["fidelity"]["steps"]}
    if "teacher_as_copied" in first:
        out["teacher_as_copied"] = mean_of([{k: v for k, v in r["teacher_as_copied"].items()
                                             if k not in ("sweep", "angles")} for r in per_draw])
    if first.get("data_floor"):
        out["data_floor"] = mean_of([r["data_floor"] for r in per_draw])
    return out


# -- the teacher at its best: chosen once, scored on each reported draw ---------------------------
def setting_of(entry: dict):
    """The :class:`~tbcm.evaluation.teachers.TeacherSetting` of a ``to_dict()`` (or a record holding its keys)."""
    from tbcm.evaluation.teachers import TeacherSetting

    interval = entry["guidance_interval"]
    return TeacherSetting(int(entry["steps"]), float(entry["shift"]), float(entry["cfg"]),
                          tuple(float(a) for a in interval) if interval else None)


def _run_models(run_dir: str | Path):
    """``(student bundle, student folder, run folder, the judge's suite class)`` of a run."""
    from tbcm.evaluation.evaluate import _suite_class, find_student
    from tbcm.models.bundle import load_bundle

    student_dir, run = find_student(run_dir)
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    return bundle, student_dir, run, _suite_class(bundle, f"student {student_dir}")


def _files_digest(folder: Path) -> str:
    """sha256 of every file under ``folder`` (names and contents): which teacher this is. The
    ``guidance:`` line of ``model.yaml`` is left out: it is the scale a distillation trains around,
    not part of what the teacher samples, and a teacher that names one later is the same teacher."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.relative_to(folder).as_posix() == "model.yaml":
            h.update(b"".join(line for line in path.read_bytes().splitlines(keepends=True)
                              if not line.startswith(b"guidance:")))
            continue
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def teacher_best_key(run_dir: str | Path, grid, n: int | None = None) -> str:
    """The store key of the teacher at its best for ``run_dir``'s teacher: everything the choice
    depends on (the teacher's files, the judge, the grid's settings for the run's saved sampler,
    the tune draw, the images per class) hashed, so another teacher, grid or ``n`` is another key."""
    from tbcm.evaluation.evaluate import run_teacher
    from tbcm.models.bundle import resolve_model_path
    from tbcm.sampler import StudentSampler

    bundle, _, run, suite = _run_models(run_dir)
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    teacher = run_teacher(run)
    folder = resolve_model_path(teacher)
    n = suite.default_n if n is None else int(n)
    what = {"teacher": _files_digest(folder) if folder.is_dir() else teacher, "judge": suite.name,
            "settings": [s.to_dict() for s in grid.settings(sampler)], "draw": grid.draw, "n": n}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"teacher_best|{Path(teacher).name}|tune draw {grid.draw}|n={n}|{digest}"


def choose_teacher_best(run_dir: str | Path, grid, n: int | None = None, progress: bool = False,
                        device: str = "cpu") -> dict:
    """The teacher of ``run_dir`` at its best over ``grid``, chosen on tune draw ``grid.draw``
    (``evaluate(split="tune", draw=grid.draw, teacher_best=grid)``; the student at one step rides
    along, a few seconds). Returns ``{"setting", "tune": {"split", "draw", "seed", "n_per_class",
    "fid", "adherence", ...}, "grid", "tried", "suite", "teacher_model"}``."""
    from tbcm.evaluation.evaluate import evaluate

    r = evaluate(run_dir, student_steps=[1], n_per_class=n, split="tune", draw=grid.draw, teacher_best=grid,
                 progress=progress, device=device)
    b = r["teacher_at_best"]
    scores = {k: v for k, v in b.items()
              if k not in (*SETTING_KEYS, "tune", "selected_on_reported_images", "grid", "tried")}
    return {"setting": {k: b[k] for k in SETTING_KEYS},
            "tune": {"split": "tune", "draw": grid.draw, "seed": r["seed"], "n_per_class": r["n_per_class"], **scores},
            "grid": b["grid"], "tried": b["tried"], "suite": r["suite"], "teacher_model": r["teacher_model"]}


def teacher_best_record(store, run_dir: str | Path, grid, n: int | None, record: dict, again: bool = False,
                        progress: bool = False, device: str = "cpu") -> tuple[dict, bool]:
    """``(the teacher_best record, whether it was computed now)``: the store's record for this
    teacher, grid, sampler, tune draw and ``n`` (:func:`teacher_best_key`) if there is one and not
    ``again``, else :func:`choose_teacher_best` appended to ``store``'s ``quality`` table with the
    fields of ``record`` (label, suite, smoke, manifest)."""
    key = teacher_best_key(run_dir, grid, n)
    if not again:
        old = next((r for r in store.latest("quality") if r["key"] == key), None)
        if old is not None:
            return old, False
    choice = choose_teacher_best(run_dir, grid, n, progress, device)
    return store.append("quality", {**record, "key": key, "kind": "teacher_best", "split": "tune", **choice}), True


def score_teacher(run_dir: str | Path, setting, split: str, draws, n: int | None = None,
                  device: str = "cpu") -> dict:
    """The teacher of ``run_dir`` at one :class:`~tbcm.evaluation.teachers.TeacherSetting` on
    ``draws`` of ``split``, ``n`` images per class (default: the judge's): exactly the images and
    scores ``evaluate`` gives the teacher at its best once chosen (same seeds, route, guidance,
    judge), without running its grid again. Returns ``{"setting", "split", "draws", "seeds",
    "n_per_class", "suite", "per_draw": [{"draw", "seed", "fid", "adherence", ...}], "mean"}``."""
    import torch

    from tbcm.evaluation.draws import Encodings, ImageDraw, sample_draw, teacher_fn
    from tbcm.evaluation.evaluate import resolve_device, run_teacher
    from tbcm.models.bundle import load_bundle
    from tbcm.models.teacher import Teacher
    from tbcm.sampling import to_pixels

    draws = [int(d) for d in draws]
    seeds = [splits.draw_seed(split, d) for d in draws]
    bundle, _, run, suite_class = _run_models(run_dir)
    suite = suite_class()
    n = suite.default_n if n is None else int(n)
    device = resolve_device(device)
    teacher = Teacher.from_bundle(load_bundle(run_teacher(run), expect_kind="teacher", text_cache=None)).to(device)
    prompts = tuple(suite.prompts)
    encodings = Encodings(prompts, teacher.encoder)
    shape = (int(bundle.meta.channels), int(bundle.meta.image_size), int(bundle.meta.image_size))
    fn = teacher_fn(teacher, setting.route(), setting.cfg, setting.interval)
    per_draw = []
    with torch.no_grad():
        for d, seed in zip(draws, seeds):
            images = ImageDraw(prompts, n, seed)
            splits.check_draw_size(len(images))
            x0 = sample_draw(images, fn, encodings, shape, device, 128)
            per_draw.append({"draw": d, "seed": seed, **suite.score(to_pixels(x0, bundle.meta.sigma_d), n)})
    return {"setting": setting.to_dict(), "split": split, "draws": draws, "seeds": seeds, "n_per_class": n,
            "suite": suite.name, "per_draw": per_draw,
            "mean": mean_of([{k: v for k, v in p.items() if k not in ("draw", "seed")} for p in per_draw])}


def best_is_as_copied(best_setting: dict, copied: dict) -> bool:
    """Whether the teacher's chosen best (a ``teacher_best`` record's ``setting``) is its as-copied
    setting (``copied``: :func:`teacher_as_copied`): then its images on the students' draws are the
    as-copied ones (same seeds, route, guidance, interval), already scored beside every student."""
    return best_setting == copied["setting"]


def teacher_as_copied(score: dict) -> dict:
    """The teacher as copied from a :func:`score_run` result, in :func:`score_teacher`'s shape
    (``evaluate`` scored it on every draw beside the student)."""
    per_draw = [{"draw": d, "seed": r["seed"], **{k: v for k, v in r["teacher_as_copied"].items()
                                                 if k not in (*SETTING_KEYS, "sweep", "angles")}}
                for d, r in zip(score["draws"], score["per_draw"])]
    first = score["per_draw"][0]["teacher_as_copied"]
    return {"setting": {k: first[k] for k in SETTING_KEYS}, "split": score["split"], "draws": score["draws"],
            "seeds": score["seeds"], "n_per_class": score["n_per_class"], "suite": score["suite"],
            "per_draw": per_draw, "mean": mean_of([{k: v for k, v in p.items() if k not in ("draw", "seed")}
                                                   for p in per_draw])}
