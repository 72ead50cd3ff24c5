"""Offline evaluation of digits models: a small CNN digit classifier, FID on its features
(torchmetrics) and prompt adherence, and ``tbcm eval`` over a distilled student.

    from tbcm.evaluation import digits_split, fid, adherence, evaluate

    split = digits_split()                                   # 1,197 train / 600 held-out digits
    fid(split.heldout_images, fake)                          # fake: [M, 1, 8, 8] in [-1, 1]
    adherence(fake, requested_digits)                        # share classified as requested
    evaluate("runs/default", student_steps=[1, 2, 4], n_per_class=100, teacher_steps=[16])
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

__all__ = [
    "PROMPTS",
    "ClassifierConfig",
    "ClassifierFeatures",
    "DigitClassifier",
    "DigitsSplit",
    "FIDReference",
    "accuracy",
    "adherence",
    "builtin_classifier_path",
    "digits_split",
    "evaluate",
    "fid",
    "format_table",
    "load_classifier",
    "predict",
    "train_classifier",
]
