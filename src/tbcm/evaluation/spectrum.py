"""A data-free artefact measure: the radially averaged power spectrum of one image set against
another's (the student's samples against its teacher's), per frequency band.

A ratio above 1 in the high bands is excess high-frequency power (speckle, noise, patch-grid
blocks); below 1 is a deficit (blur). The teacher against itself reads 1 in every band. Needs no
data and no judge, so it applies to every family (on decoded pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor


def band_power(images: Tensor, bands: int = 4) -> Tensor:
    """``[bands]`` mean power of ``images`` ``[N, C, H, W]`` (pixels, any range) in equal-width
    bands of radial frequency over ``(0, 0.5]`` cycles per pixel, each band closed above (the DC term
    excluded; the corners beyond 0.5 join the last band; a band no frequency of this image size
    falls in is NaN). Each image's mean is removed first, so brightness does not count."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"band_power needs images [N, C, H, W], got {tuple(images.shape)}")
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1))  # [H, W]
    h, w = power.shape
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()
    which = ((radius / 0.5 * bands).ceil() - 1).clamp(0, bands - 1).long()
    keep = radius > 0  # not the DC term
    total = torch.zeros(bands, dtype=torch.float64).index_add_(0, which[keep], power[keep])
    count = torch.zeros(bands, dtype=torch.float64).index_add_(0, which[keep], torch.ones_like(power[keep]))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def spectrum_ratio(images: Tensor, reference: Tensor, bands: int = 4) -> list[float]:
    """Per band, the power of ``images`` over that of ``reference`` (both ``[N, C, H, W]`` of one
    image size): 1 = the same spectrum, > 1 excess (noise, blocks), < 1 deficit (blur); NaN for a
    band this image size has no frequency in."""
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"spectrum_ratio needs images of one shape, got {tuple(images.shape[1:])} and "
                         f"{tuple(reference.shape[1:])}")
    return (band_power(images, bands) / band_power(reference, bands).clamp(min=1e-30)).tolist()
