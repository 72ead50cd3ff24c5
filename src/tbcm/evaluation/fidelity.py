"""Fidelity to the teacher, data-free: how faithfully a student reproduces the teacher it copies.

The student's ``n``-step sample and the teacher's ODE endpoint on the route the rollouts used
(:meth:`tbcm.sampler.StudentSampler.teacher_route`, guided as in training) start from the same
initial noise at the same guidance; what differs is the student. Needs no real images, so a user
with their own teacher and no dataset can check a student. Two kinds of measure:

* paired error, image by image: the latent MSE ``mean((x_student - x_teacher)^2) / sigma_d^2``
  (TrigFlow space divided by ``sigma_d^2``: the MSE of flow-space latents, or of pixels in
  ``[-1, 1]`` for a pixel-space teacher; every family), and with a judge (digits classifier, scenes
  judge) the distance between the judge's features of the two images and the share of images whose
  judged label (digit; all six scene attributes) agrees;
* distribution distance: FID of the student's samples against the teacher's samples, on the judge's
  features (digits, scenes) or on the FID Inception's (:mod:`tbcm.evaluation.inception`) for a
  latent teacher when its weights are given.

Each paired mean comes with its scale: the same distance between two *independent* teacher samples
(image ``j`` against image ``j + 1`` of the same prompt; of the next prompt when there is one image
per prompt), the value a student that ignored its noise would score.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def _mean_se(values: Tensor) -> tuple[float, float | None]:
    """Mean and standard error over images (``None`` for one image: JSON has no NaN)."""
    values = values.double()
    se = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else None
    return float(values.mean()), se


def unpaired(n: int, count: int) -> Tensor:
    """``[count]`` indices pairing image ``k = i n + j`` with another image of the same prompt
    (``j + 1`` mod ``n``), or with the next image when ``n == 1``."""
    k = torch.arange(count)
    if n > 1:
        return (k // n) * n + (k % n + 1) % n
    return (k + 1) % count


def latent_error(student_x0: Tensor, teacher_x0: Tensor, sigma_d: float, n: int) -> dict:
    """Paired latent error of ``[N, C, H, W]`` TrigFlow-space samples (row-major, ``n`` per prompt).

    ``latent_mse``: mean over images of ``mean((x_s - x_t)^2) / sigma_d^2``; ``latent_mse_se`` its
    standard error over images (``None`` for one image); ``latent_mse_unpaired``: the same between independent teacher samples.
    """
    if student_x0.shape != teacher_x0.shape:
        raise ValueError(f"student samples {tuple(student_x0.shape)} but teacher samples {tuple(teacher_x0.shape)}")
    per_image = (student_x0.double() - teacher_x0.double()).pow(2).flatten(1).mean(1) / sigma_d**2
    mean, se = _mean_se(per_image)
    other = teacher_x0[unpaired(n, teacher_x0.shape[0])]
    base = (other.double() - teacher_x0.double()).pow(2).flatten(1).mean(1) / sigma_d**2
    return {"latent_mse": mean, "latent_mse_se": se, "latent_mse_unpaired": float(base.mean())}


def judged_error(student_px: Tensor, teacher_px: Tensor, n: int, features: Callable[[Tensor], Tensor],
                 labels: Callable[[Tensor], Tensor]) -> dict:
    """Paired error through a judge, on pixels ``[N, C, H, W]`` in ``[-1, 1]`` (row-major, ``n`` per prompt).

    ``feature_distance``: mean over images of the L2 distance between the judge's features of the
    student's and the teacher's image (``feature_distance_unpaired``: between independent teacher
    samples); ``label_agreement``: the share of images whose judged labels (``labels(x) -> [N, L]``
    or ``[N]``) all agree.
    """
    fs, ft = features(student_px).double(), features(teacher_px).double()
    dist = (fs - ft).norm(dim=1)
    mean, se = _mean_se(dist)
    base = (ft[unpaired(n, ft.shape[0])] - ft).norm(dim=1)
    ls, lt = labels(student_px), labels(teacher_px)
    agree = (ls == lt).reshape(ls.shape[0], -1).all(1)
    return {"feature_distance": mean, "feature_distance_se": se, "feature_distance_unpaired": float(base.mean()),
            "label_agreement": float(agree.double().mean())}


def frechet_between(teacher_images: Tensor, student_images: Tensor, feature: torch.nn.Module,
                    chunk: int = 256) -> float:
    """FID of ``student_images`` against ``teacher_images`` on ``feature`` (a module with
    ``num_features`` returning ``[N, D]``, as torchmetrics' ``FrechetInceptionDistance`` takes it);
    the images are whatever that module reads (pixels in ``[-1, 1]`` for a judge, uint8 RGB for Inception)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    device = next(iter(feature.parameters()), torch.empty(0)).device
    metric = FrechetInceptionDistance(feature=feature, reset_real_features=True).to(device)
    for real in teacher_images.split(chunk):
        metric.update(real.to(device), real=True)
    for fake in student_images.split(chunk):
        metric.update(fake.to(device), real=False)
    return float(metric.compute())
