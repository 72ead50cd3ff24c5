"""``tbcm eval``: FID and prompt adherence of a distilled digits student (and of its teacher).

For each sampler, ``n`` images per digit are generated from the prompts ``"a handwritten digit
D"`` (D = 0..9) with fixed seeds (image ``j`` of every digit starts from the noise of seed
``seed + j``), so a rerun gives the same numbers. FID compares the classifier features of those
``10 n`` images with the 600 held-out real digits the classifier never trained on; adherence is
the share the classifier assigns to the requested digit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from ..errors import UserError, brief
from ..models.bundle import BUILTIN, Bundle, load_bundle
from ..models.student import Student
from ..models.teacher import Teacher
from ..previews import student_samples, teacher_samples
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


def _check_digits_model(bundle: Bundle, where: str) -> None:
    """The classifier judges 8x8 grayscale digits; the model must make them from the digit prompts."""
    shape = (bundle.meta.channels, bundle.meta.image_size)
    if shape != (1, 8):
        raise UserError(f"{where} makes {shape[0]}x{shape[1]}x{shape[1]} images, the digit classifier takes "
                        "1x8x8: tbcm eval measures digits models only")
    bundle.encoder.token_ids(PROMPTS)  # PromptError (a UserError) names the unknown word


def _check_counts(name: str, values: list[int]) -> None:
    if not values or any(v < 1 for v in values):
        raise UserError(f"{name} must be whole numbers >= 1 (got {values}): e.g. {name} 1,2,4")


def _scores(images: torch.Tensor, labels: torch.Tensor, ref: FIDReference, clf: DigitClassifier) -> dict:
    return {"fid": ref(images), "adherence": adherence(images, labels, clf)}


@torch.no_grad()
def evaluate(path: str | os.PathLike, student_steps: list[int] = (1, 2, 4), n_per_class: int = 100,
             teacher_steps: list[int] = (), cfg_scale: float | None = None, seed: int = 0,
             classifier: DigitClassifier | None = None) -> dict:
    """Scores of the student in ``path`` (a run folder or a student folder) and, for each entry
    of ``teacher_steps``, of the run's teacher (its ``config.yaml`` ``teacher``, else builtin).

    Returns ``{"student": {"1": {"fid", "adherence"}, ...}, "teacher": {"16": {...}},
    "n_per_class", "cfg_scale", "seed", "teacher_model", "reference"}``. ``cfg_scale`` (default:
    the student's) is the student's guidance input and the teacher's guidance scale.
    """
    student_steps, teacher_steps = list(student_steps), list(teacher_steps)
    _check_counts("--steps", student_steps)
    if teacher_steps:
        _check_counts("--teacher", teacher_steps)
    if n_per_class < 1:
        raise UserError(f"--n must be at least 1 (got {n_per_class})")
    student_dir, run_dir = find_student(path)
    bundle = load_bundle(student_dir, expect_kind="student")
    _check_digits_model(bundle, f"student {student_dir}")
    teacher, teacher_name = None, None
    if teacher_steps:  # load and check everything before generating anything
        teacher_name = run_teacher(run_dir)
        tbundle = load_bundle(teacher_name, expect_kind="teacher")
        _check_digits_model(tbundle, f"teacher {teacher_name}")
        teacher = Teacher.from_bundle(tbundle)
    cfg = float(cfg_scale if cfg_scale is not None else bundle.meta.extra.get("default_cfg_scale", 4.5))
    shift = float(bundle.meta.extra.get("shift", 2.5))

    clf = classifier if classifier is not None else load_classifier()
    split_seed = int(getattr(clf, "meta", {}).get("split", {}).get("seed", 0))
    heldout = digits_split(split_seed).heldout_images
    ref = FIDReference(heldout, clf)
    labels = torch.arange(10).repeat_interleave(n_per_class)  # row-major (digit, seed)
    student = Student.from_bundle(bundle).eval()

    result: dict = {"student": {}, "teacher": {}}
    for steps in student_steps:  # one prompt at a time: memory stays at n images
        images = torch.cat([student_samples(student, bundle.encoder, [p], cfg, steps, n_per_class, shift, seed)
                            for p in PROMPTS])
        result["student"][str(steps)] = _scores(images, labels, ref, clf)
    for steps in teacher_steps:
        images = torch.cat([teacher_samples(teacher, [p], cfg, steps, n_per_class, shift, seed) for p in PROMPTS])
        result["teacher"][str(steps)] = _scores(images, labels, ref, clf)
    result.update({"n_per_class": n_per_class, "cfg_scale": cfg, "seed": seed, "teacher_model": teacher_name,
                   "reference": {"heldout_images": int(heldout.shape[0]), "split_seed": split_seed}})
    return result


def format_table(result: dict) -> str:
    """A small text table of :func:`evaluate`'s result."""
    lines = [f"{'model':<8} {'steps':>5} {'FID':>9} {'adherence':>10}"]
    for model in ("student", "teacher"):
        for steps, s in result[model].items():
            lines.append(f"{model:<8} {steps:>5} {s['fid']:>9.4f} {s['adherence']:>10.1%}")
    ref = result["reference"]
    lines.append(f"{result['n_per_class']} images per digit, cfg {result['cfg_scale']}, seed {result['seed']}; "
                 f"FID against {ref['heldout_images']} held-out real digits on the digit classifier's features")
    return "\n".join(lines)
