"""``tbcm eval``: FID and prompt adherence of a distilled digits or scenes student (and of its
teacher).  The kind of model picks the suite: 1x8x8 images are digits (below), 3x32x32 images are
scenes (:mod:`tbcm.scenes.evaluate`: seen and held-out prompts, the scenes judge).

For each sampler, ``n`` images per digit are generated from the prompts ``"a handwritten digit
D"`` (D = 0..9) with fixed seeds, so a rerun gives the same numbers: image ``j`` of prompt ``i``
has its own seed ``seed + i n + j``, which draws its initial noise and a few-step student's
re-noising (as ``tbcm sample --seed`` does); teacher and student start from the same noise. Every
image is independent, as FID assumes, and the numbers do not depend on how the set is batched
(before 2026-12-02 the prompts' ``j``-th images shared seed ``seed + j``, and a few-step student's
re-noising was shared by every batch). FID on 100 images per digit moves by 1 to 1.3 points (sd)
from one set of seeds to another (``benchmarks/eval_noise.py``): compare on many draws. FID
compares the classifier features of those ``10 n`` images with the 600 held-out real digits the
classifier never trained on; adherence is the share the classifier assigns to the requested digit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import yaml

from ..errors import UserError, brief
from ..models.adapter import valid_interval
from ..models.bundle import BUILTIN, Bundle, load_bundle
from ..models.student import Student
from ..models.teacher import Teacher
from ..previews import student_samples, teacher_samples
from ..sampling import fresh_noise_share, saved_routes
from .classifier import DigitClassifier, digits_split, load_classifier
from .metrics import FIDReference, adherence

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
RUN_HINT = "pass a `tbcm distill` run folder or its student/ folder"


def find_student(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(student folder, run folder or None)`` for a run folder or a student folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: {RUN_HINT}")
    if (path / "student" / "model.yaml").is_file():
        return path / "student", path
    if (path / "model.yaml").is_file():
        return path, (path.parent if (path.parent / "config.yaml").is_file() else None)
    raise UserError(f"{path} is neither a distill run folder nor a student folder: {RUN_HINT}")


def run_teacher(run_dir: Path | None) -> str:
    """The ``teacher`` key of the run's ``config.yaml``; ``"builtin"`` without a run folder."""
    if run_dir is None:
        return BUILTIN
    config = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(config.read_text())
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{config} is not readable YAML ({brief(exc)}): fix it or pass DIR/student") from None
    teacher = raw.get("teacher") if isinstance(raw, dict) else None
    return str(teacher) if teacher else BUILTIN


class DigitsSuite:
    """The digits suite: ``score(images, n)`` of ``[10 n, 1, 8, 8]`` images, row-major (digit, seed)."""

    name = "digits"
    default_n = 100
    prompts = PROMPTS
    unit = "digit"

    def __init__(self, classifier: DigitClassifier | None = None):
        self.clf = classifier if classifier is not None else load_classifier()
        self.split_seed = int(getattr(self.clf, "meta", {}).get("split", {}).get("seed", 0))
        self.heldout = digits_split(self.split_seed).heldout_images
        self.ref = FIDReference(self.heldout, self.clf)

    @staticmethod
    def matches(channels: int, image_size: int) -> bool:
        return (channels, image_size) == (1, 8)

    @classmethod
    def check(cls, bundle: Bundle, where: str) -> None:
        bundle.encoder.token_ids(PROMPTS)  # PromptError (a UserError) names the unknown word

    def score(self, images: torch.Tensor, n: int) -> dict:
        labels = torch.arange(10).repeat_interleave(n)
        return {"fid": self.ref(images), "adherence": adherence(images, labels, self.clf)}

    def reference_info(self) -> dict:
        return {"heldout_images": int(self.heldout.shape[0]), "split_seed": self.split_seed}

    @staticmethod
    def footer(result: dict) -> str:
        ref = result["reference"]
        return (f"{result['n_per_class']} images per digit, cfg {result['cfg_scale']}, image seeds from "
                f"{result['seed']}, one per image; "
                f"FID against {ref['heldout_images']} held-out real digits on the digit classifier's features")

    @staticmethod
    def extra_lines(model: str, steps: str, cfg: float, scores: dict) -> list[str]:
        return []


def _suites() -> tuple:
    """Every offline suite, in the order they are tried (the scenes module loads on demand)."""
    from ..scenes.evaluate import ScenesSuite

    return DigitsSuite, ScenesSuite


def _suite_class(bundle: Bundle, where: str):
    """The suite that measures the images ``bundle`` makes (its channels and size)."""
    shape = (bundle.meta.channels, bundle.meta.image_size)
    for suite in _suites():
        if suite.matches(*shape):
            return suite
    raise UserError(f"{where} makes {shape[0]}x{shape[1]}x{shape[1]} images: tbcm eval measures digits (1x8x8) "
                    "and scenes (3x32x32) models; for a real teacher use --reference")


def _check_counts(name: str, values: list[int]) -> None:
    if not values or any(v < 1 for v in values):
        raise UserError(f"{name} must be whole numbers >= 1 (got {values}): e.g. {name} 1,2,4")


@torch.no_grad()
def evaluate(path: str | os.PathLike, student_steps: list[int] = (1, 2, 4), n_per_class: int | None = None,
             teacher_steps: list[int] = (), cfg_scale: float | None = None, seed: int = 0,
             classifier: DigitClassifier | None = None, teacher_cfgs: list[float] = (),  # or a SceneJudge
             student_cfgs: list[float] | None = None, fresh_noise: float | None = None,
             student_shift: float | None = None, teacher_interval: list[float] | None = None,
             student_routes: dict | None = None) -> dict:
    """Scores of the student in ``path`` (a run folder or a student folder) and, for each entry
    of ``teacher_steps``, of the run's teacher (its ``config.yaml`` ``teacher``, else builtin).

    Returns ``{"student": {"1": {"fid", "adherence"}, ...}, "teacher": {"16": {...}},
    "n_per_class", "cfg_scale", "seed", "teacher_model", "reference", "suite"}``. ``n_per_class``:
    images per digit / per scenes prompt (default: the suite's, 100 / 32). ``cfg_scale`` (default:
    the student's) is the student's guidance input and the teacher's guidance scale: the
    same-guidance comparison.

    The honest comparison: ``teacher_cfgs`` sweeps the teacher's guidance at every
    ``teacher_steps`` count (``"teacher_sweep"``; ``"teacher_best"``: the best FID and its guidance
    at 16 steps, else at the largest count), and the student is swept over ``student_cfgs``
    (default: the guidance scales it was trained on) at every step count (``"student_sweep"``,
    ``"student_best"``). ``"ratio"`` is student-best FID / teacher-best FID per step count.
    ``fresh_noise`` is the multi-step sampler's re-noising mix (:func:`tbcm.sampling.student_sample`;
    default: the one saved with the student, ``"fresh_noise"``, else 1);
    ``student_shift`` its route (default: the one saved with the student, ``"student_shift"``);
    ``student_routes`` explicit routes per step count (:func:`tbcm.sampling.student_angles`; default:
    the ones saved with the student, ``"routes"``, unless ``student_shift`` is given).
    ``teacher_interval`` ``[lo, hi]`` guides the teacher only at those angles (``[]``: at every
    angle; default ``None``: the interval the student was distilled with, ``"guidance_interval"``),
    so the same-guidance comparison is with the teacher the student learnt from.
    """
    student_steps, teacher_steps = list(student_steps), list(teacher_steps)
    teacher_cfgs = [float(w) for w in teacher_cfgs]
    _check_counts("--steps", student_steps)
    if teacher_cfgs and not teacher_steps:
        teacher_steps = [16]
    if teacher_steps:
        _check_counts("--teacher", teacher_steps)
    if n_per_class is not None and n_per_class < 1:
        raise UserError(f"--n must be at least 1 (got {n_per_class})")
    if fresh_noise is not None:
        fresh_noise_share({}, fresh_noise)  # refused before any model loads
    if student_shift is not None and not (math.isfinite(student_shift) and student_shift > 0):
        raise UserError(f"--shift must be a positive number (got {student_shift}): the student's route shift, "
                        "e.g. 1 (2-step middle angle pi/4) or 2.5 (1.19 rad)")
    for name, values in (("--teacher-cfg", teacher_cfgs), ("--student-cfg", student_cfgs or [])):
        if any(not (w >= 0) for w in values):
            raise UserError(f"{name} must be guidance scales >= 0 (got {values}): e.g. {name} 1,1.5,2")
    student_dir, run_dir = find_student(path)
    bundle = load_bundle(student_dir, expect_kind="student")
    suite_class = _suite_class(bundle, f"student {student_dir}")
    suite_class.check(bundle, f"student {student_dir}")
    teacher, teacher_name = None, None
    if teacher_steps:  # load and check everything before generating anything
        teacher_name = run_teacher(run_dir)
        tbundle = load_bundle(teacher_name, expect_kind="teacher")
        if _suite_class(tbundle, f"teacher {teacher_name}") is not suite_class:
            raise UserError(f"teacher {teacher_name} makes other images than student {student_dir}: "
                            "pass the run folder the student was distilled in")
        suite_class.check(tbundle, f"teacher {teacher_name}")
        teacher = Teacher.from_bundle(tbundle)
    extra = bundle.meta.extra
    interval = [float(a) for a in (extra.get("guidance_interval", []) if teacher_interval is None else teacher_interval)]
    if interval and not valid_interval(interval):
        raise UserError(f"--teacher-interval {interval}: need LO,HI angles with 0 <= LO < HI <= pi/2 (e.g. 0,0.5), or none")
    if teacher is not None:
        teacher.guidance_interval = tuple(interval) or None
    cfg = float(cfg_scale if cfg_scale is not None else extra.get("default_cfg_scale", 4.5))
    saved_shift = float(extra.get("shift", 2.5))  # the student's saved route (older students: also the teacher's)
    shift = float(student_shift) if student_shift is not None else saved_shift
    fresh_noise = fresh_noise_share(extra, fresh_noise)
    routes = saved_routes(extra, student_routes, student_shift)
    teacher_shift = float(extra.get("teacher_shift", saved_shift))  # --shift moves the student only
    honest = bool(teacher_cfgs) or student_cfgs is not None
    if student_cfgs is None:
        student_cfgs = [float(w) for w in extra.get("cfg_scales", [cfg])]

    suite = suite_class(classifier)  # None: the suite's shipped judge
    n_per_class = suite.default_n if n_per_class is None else n_per_class
    chunks = [suite.prompts[i:i + max(1, 128 // n_per_class)]  # ~128 images a call; memory stays bounded
              for i in range(0, len(suite.prompts), max(1, 128 // n_per_class))]
    student = Student.from_bundle(bundle).eval()

    # the first image seed of each chunk: image j of prompt i is seed + i n + j, whatever the chunking
    firsts = [seed + sum(map(len, chunks[:k])) * n_per_class for k in range(len(chunks))]

    def student_scores(steps: int, w: float) -> dict:
        images = torch.cat([student_samples(student, bundle.encoder, c, w, steps, n_per_class, shift, s0,
                                            fresh_noise=fresh_noise, independent=True, routes=routes)
                            for c, s0 in zip(chunks, firsts)])
        return suite.score(images, n_per_class)

    def teacher_scores(steps: int, w: float) -> dict:
        images = torch.cat([teacher_samples(teacher, c, w, steps, n_per_class, teacher_shift, s0, independent=True)
                            for c, s0 in zip(chunks, firsts)])
        return suite.score(images, n_per_class)

    result: dict = {"student": {}, "teacher": {}}
    for steps in student_steps:
        result["student"][str(steps)] = student_scores(steps, cfg)
    for steps in teacher_steps:
        result["teacher"][str(steps)] = teacher_scores(steps, cfg)
    if honest:
        result["student_sweep"] = {str(k): {str(w): (result["student"][str(k)] if w == cfg else student_scores(k, w))
                                            for w in student_cfgs} for k in student_steps}
        result["student_best"] = {k: _best(sweep) for k, sweep in result["student_sweep"].items()}
    if teacher_cfgs:
        result["teacher_sweep"] = {str(k): {str(w): (result["teacher"][str(k)] if w == cfg else teacher_scores(k, w))
                                            for w in teacher_cfgs} for k in teacher_steps}
        at = "16" if "16" in result["teacher_sweep"] else str(max(teacher_steps))
        result["teacher_best"] = {"steps": int(at), **_best(result["teacher_sweep"][at])}
        result["ratio"] = {k: b["fid"] / result["teacher_best"]["fid"] for k, b in result["student_best"].items()}
    result.update({"n_per_class": n_per_class, "cfg_scale": cfg, "seed": seed, "teacher_model": teacher_name,
                   "fresh_noise": fresh_noise, "student_shift": shift, "student_routes": routes, "suite": suite.name,
                   "teacher_interval": interval,
                   "noise": "per-image seeds",  # each image its own seed (before 2026-12-02: one per column)
                   "reference": suite.reference_info()})
    if honest:
        result["student_cfgs"] = student_cfgs
    if teacher_cfgs:
        result["teacher_cfgs"] = teacher_cfgs
    return result


def _best(sweep: dict) -> dict:
    """``{"cfg", "fid", "adherence"}`` of the guidance with the lowest FID in ``{cfg: scores}``."""
    w = min(sweep, key=lambda k: sweep[k]["fid"])
    return {"cfg": float(w), **sweep[w]}


def format_table(result: dict) -> str:
    """A small text table of :func:`evaluate`'s result."""
    suite = _suite_named(result.get("suite", "digits"))
    lines = [f"{'model':<8} {'steps':>5} {'cfg':>5} {'FID':>9} {'adherence':>10}"]
    for model in ("student", "teacher"):
        for steps, s in result[model].items():
            lines.append(f"{model:<8} {steps:>5} {result['cfg_scale']:>5g} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
            lines += suite.extra_lines(model, steps, result["cfg_scale"], s)
    if "teacher_best" in result or "student_best" in result:
        lines.append("best guidance of each (the honest comparison):")
        tb = result.get("teacher_best")
        if tb:
            lines.append(f"{'teacher':<8} {tb['steps']:>5} {tb['cfg']:>5g} {tb['fid']:>9.4f} {tb['adherence']:>10.1%}")
            lines += suite.extra_lines("teacher", str(tb["steps"]), tb["cfg"], tb)
        for steps, b in result.get("student_best", {}).items():
            ratio = f"  {result['ratio'][steps]:.2f}x the teacher's best FID" if "ratio" in result else ""
            lines.append(f"{'student':<8} {steps:>5} {b['cfg']:>5g} {b['fid']:>9.4f} {b['adherence']:>10.1%}{ratio}")
            lines += suite.extra_lines("student", steps, b["cfg"], b)
    if result.get("teacher_interval"):
        lo, hi = result["teacher_interval"]
        lines.append(f"teacher guided only at angles in ({lo:g}, {hi:g}] rad (the conditional teacher elsewhere)")
    lines.append(suite.footer(result))
    return "\n".join(lines)



def _suite_named(name: str):
    return next(suite for suite in _suites() if suite.name == name)
