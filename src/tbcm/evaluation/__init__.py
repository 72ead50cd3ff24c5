"""Offline evaluation of digits models: a small CNN digit classifier, FID on its features
(torchmetrics) and prompt adherence, and ``tbcm eval`` over a distilled student.

    from tbcm.evaluation import digits_split, fid, adherence, evaluate

    split = digits_split()                                   # 1,197 train / 600 held-out digits
    fid(split.heldout_images, fake)                          # fake: [M, 1, 8, 8] in [-1, 1]
    adherence(fake, requested_digits)                        # share classified as requested
    evaluate("runs/default", student_steps=[1, 2, 4], n_per_class=100, teacher_steps=[16])
    evaluate("runs/default", split="confirm", draw=0, teacher_best=TeacherGrid(), fidelity=True)

Tune and confirm splits of evaluation draws and training seeds: :mod:`tbcm.evaluation.splits`;
fidelity to the teacher (data-free): :mod:`tbcm.evaluation.fidelity`; the teacher as copied and at
its best: :mod:`tbcm.evaluation.teachers`.
"""

from .classifier import (
    ClassifierConfig,
    DigitClassifier,
    DigitsSplit,
    accuracy,
    builtin_classifier_path,
    digits_split,
    load_classifier,
    train_classifier,
)
from .evaluate import PROMPTS, evaluate, format_table
from .metrics import ClassifierFeatures, FIDReference, adherence, fid, predict
from .splits import draw_seed, summarize, target_met, train_seeds
from .teachers import TeacherGrid, TeacherSetting

__all__ = [
    "PROMPTS",
    "TeacherGrid",
    "TeacherSetting",
    "ClassifierConfig",
    "ClassifierFeatures",
    "DigitClassifier",
    "DigitsSplit",
    "FIDReference",
    "accuracy",
    "adherence",
    "builtin_classifier_path",
    "digits_split",
    "draw_seed",
    "evaluate",
    "fid",
    "format_table",
    "load_classifier",
    "predict",
    "summarize",
    "target_met",
    "train_classifier",
    "train_seeds",
]
