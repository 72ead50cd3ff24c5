"""The digits suite of ``tbcm eval`` (FID on the shipped classifier's features against the 600
held-out digits, adherence, fidelity features, the data floor) and how a model finds its suite."""

from __future__ import annotations

import torch

from ..errors import UserError
from ..models.bundle import Bundle
from .classifier import DigitClassifier, digits_split, load_classifier
from .metrics import FIDReference, adherence, predict

PROMPTS = [f"a handwritten digit {d}" for d in range(10)]
FLOOR_SEED = 0  # the permutation that picks each digit's training images for the data floor


class DigitsSuite:
    """The digits suite: ``score(images, n)`` of ``[10 n, 1, 8, 8]`` pixels in ``[-1, 1]``,
    row-major (digit, seed); ``features`` / ``labels`` / ``fid_against`` for fidelity to the teacher."""

    name = "digits"
    default_n = 100
    prompts = PROMPTS
    unit = "digit"
    shape = (1, 8, 8)

    def __init__(self, classifier: DigitClassifier | None = None):
        self.clf = classifier if classifier is not None else load_classifier()
        self.split_seed = int(getattr(self.clf, "meta", {}).get("split", {}).get("seed", 0))
        self.split = digits_split(self.split_seed)
        self.heldout = self.split.heldout_images
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

    # -- fidelity: the judge's view of two paired image sets ------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 64]`` classifier features of ``[N, 1, 8, 8]`` pixels."""
        dtype = next(self.clf.parameters()).dtype
        return torch.cat([self.clf.features(c.to(dtype)) for c in images.split(1024)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """``[N]`` predicted digits."""
        return predict(images, self.clf)

    def fid_against(self, reference: torch.Tensor, images: torch.Tensor) -> float:
        """FID of ``images`` against ``reference`` (e.g. the teacher's samples) on the classifier's features."""
        return FIDReference(reference, self.clf)(images)

    def data_floor(self, n: int) -> dict:
        """FID of real *training* digits against the held-out reference: ``min(n, fewest per digit)``
        training images of each digit (a fixed permutation), as many as a generated set of ``n`` per digit."""
        labels = self.split.train_labels
        gen = torch.Generator().manual_seed(FLOOR_SEED)
        per = min(n, int(labels.bincount(minlength=10).min()))
        picked = [idx[torch.randperm(idx.numel(), generator=gen)[:per]]
                  for idx in (torch.nonzero(labels == d).squeeze(1) for d in range(10))]
        images = self.split.train_images[torch.cat(picked)]
        return {"fid": self.ref(images), "images": int(images.shape[0]), "per_prompt": per,
                "real": "training split of the digits (the teacher's data), against the held-out reference"}

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
    """Every offline suite, in the order they are tried (the scenes module loads on demand); the
    unbound :class:`~tbcm.evaluation.labelled.LabelledSuite` only names results (it matches nothing)."""
    from ..scenes.evaluate import ScenesSuite
    from .labelled import LabelledSuite

    return DigitsSuite, ScenesSuite, LabelledSuite


def _suite_class(bundle: Bundle, where: str, required: bool = True):
    """The suite that measures the images ``bundle`` makes: its teacher's own judge where the
    teacher's folder holds one (``TEACHER/judge``, :mod:`tbcm.evaluation.labelled`), else by its
    channels and size; ``None`` for another kind of model unless ``required``."""
    from .labelled import LabelledSuite, judge_of_teacher

    judge = judge_of_teacher(bundle.meta.extra.get("teacher") if bundle.meta.kind == "student" else None)
    if judge is not None:
        return LabelledSuite.for_judge(judge)
    shape = (bundle.meta.channels, bundle.meta.image_size)
    for suite in _suites():
        if suite.matches(*shape):
            return suite
    if not required:
        return None
    raise UserError(f"{where} makes {shape[0]}x{shape[1]}x{shape[1]} images: tbcm eval measures digits (1x8x8) "
                    "and scenes (3x32x32) models, and the students of a teacher with a judge (`tbcm judge train "
                    "--out TEACHER/judge`); for a real teacher use --reference, or --fidelity "
                    "(fidelity to its teacher, no data needed)")


def _suite_named(name: str):
    return next(suite for suite in _suites() if suite.name == name)
