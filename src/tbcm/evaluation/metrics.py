"""FID on the digit classifier's features (torchmetrics, offline) and prompt adherence.

torchmetrics' ``FrechetInceptionDistance`` takes any ``nn.Module`` as its ``feature`` extractor:
with a custom module it feeds the images through unchanged (no uint8 conversion, no resizing),
reads the feature width from the module's ``num_features`` attribute, keeps its running sums in
float64 and returns the distance in the dtype of the features it was given. The adapter below
therefore takes pixels ``[N, 1, 8, 8]`` in ``[-1, 1]`` as they are and returns float64 features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from .classifier import DigitClassifier, load_classifier

CHUNK = 1024  # images per forward pass


class ClassifierFeatures(nn.Module):
    """``forward(x [N,1,8,8] in [-1,1]) -> [N, num_features]`` float64: the classifier's
    penultimate layer, as torchmetrics' FID wants it."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.config.feature_dim

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        dtype = next(self.classifier.parameters()).dtype
        return self.classifier.features(x.to(dtype)).double()


def _check_images(x: Tensor, what: str, shape: tuple[int, int, int] = (1, 8, 8)) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} must be [N, {', '.join(map(str, shape))}] pixels in [-1, 1], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{what} needs at least 2 images for a covariance, got {x.shape[0]}")


class FIDReference:
    """FID against fixed reference images: their statistics are computed once.

    ``ref = FIDReference(real)``; ``ref(fake)`` -> float (lower is better), ``real`` and ``fake``
    ``[N, 1, 8, 8]`` in ``[-1, 1]``.  ``classifier``: any module with ``features(x) -> [N, D]`` and
    ``config.feature_dim`` (the scenes judge too, with ``shape=(3, 32, 32)``).
    """

    def __init__(self, real: Tensor, classifier: DigitClassifier | None = None,
                 shape: tuple[int, int, int] = (1, 8, 8)):
        self.shape = tuple(shape)
        _check_images(real, "real images", self.shape)
        extractor = ClassifierFeatures(classifier if classifier is not None else load_classifier())
        self.metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        for chunk in real.split(CHUNK):
            self.metric.update(chunk, real=True)

    def __call__(self, fake: Tensor) -> float:
        _check_images(fake, "fake images", self.shape)
        self.metric.reset()  # the fake statistics only (reset_real_features=False)
        for chunk in fake.split(CHUNK):
            self.metric.update(chunk, real=False)
        return float(self.metric.compute())


def fid(real: Tensor, fake: Tensor, classifier: DigitClassifier | None = None) -> float:
    """Frechet distance between the classifier features of ``real`` ``[N,1,8,8]`` and ``fake``
    ``[M,1,8,8]`` (float64 statistics); default classifier: the shipped one."""
    return FIDReference(real, classifier)(fake)


@torch.no_grad()
def predict(images: Tensor, classifier: DigitClassifier | None = None) -> Tensor:
    """Predicted digits ``[N]`` (long) for ``images`` ``[N, 1, 8, 8]`` in ``[-1, 1]``."""
    model = classifier if classifier is not None else load_classifier()
    dtype = next(model.parameters()).dtype
    return torch.cat([model(c.to(dtype)).argmax(1) for c in images.split(CHUNK)])


def adherence(images: Tensor, labels: Tensor, classifier: DigitClassifier | None = None) -> float:
    """Share of ``images`` ``[N, 1, 8, 8]`` the classifier assigns to the requested ``labels`` ``[N]``."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return float((predict(images, classifier) == labels.to(torch.long)).double().mean())
