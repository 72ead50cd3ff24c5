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


def spectrum_ratio(images: Tensor, reference: Tensor, bands: int = 4, reference_power: Tensor | None = None) -> list[float]:
    """Per band, the power of ``images`` over that of ``reference`` (both ``[N, C, H, W]`` of one
    image size): 1 = the same spectrum, > 1 excess (noise, blocks), < 1 deficit (blur); NaN for a
    band this image size has no frequency in. ``reference_power``: ``band_power(reference, bands)``
    when the caller compares many image sets with one reference (computed here when ``None``)."""
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"spectrum_ratio needs images of one shape, got {tuple(images.shape[1:])} and "
                         f"{tuple(reference.shape[1:])}")
    ref = band_power(reference, bands) if reference_power is None else reference_power
    return (band_power(images, bands) / ref.clamp(min=1e-30)).tolist()


def blockiness(images: Tensor, patch: int) -> float:
    """How much sharper ``images`` ``[N, C, H, W]`` change across the boundaries of a ``patch``-pixel
    grid than inside its cells: the mean absolute difference of neighbouring pixels (rows and
    columns) across a boundary over that of neighbours inside a cell. A transformer whose patches
    do not agree at their borders (blocks on the patch grid) reads above an image without them."""
    if images.dim() != 4 or patch < 2 or images.shape[-1] <= patch or images.shape[-2] <= patch:
        raise ValueError(f"blockiness needs images [N, C, H, W] larger than a patch >= 2, got "
                         f"{tuple(images.shape)} and patch {patch}")
    x = images.double()
    dx, dy = (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()
    across_x = torch.arange(1, x.shape[-1]) % patch == 0  # difference j is between pixels j - 1 and j
    across_y = torch.arange(1, x.shape[-2]) % patch == 0
    across = torch.cat([dx[..., across_x].flatten(), dy[..., across_y, :].flatten()]).mean()
    inside = torch.cat([dx[..., ~across_x].flatten(), dy[..., ~across_y, :].flatten()]).mean()
    return float(across / inside.clamp(min=1e-30))


def block_ratio(images: Tensor, reference: Tensor, patch: int) -> float:
    """:func:`blockiness` of ``images`` over that of ``reference`` (the teacher's samples): 1 = as
    blocky as the teacher on its patch grid, above 1 = blocks the teacher does not make."""
    return blockiness(images, patch) / max(blockiness(reference, patch), 1e-30)


def pixel_patch(meta) -> int | None:
    """The patch grid of a pixel-space model's samples in pixels (its network's ``patch_size``), or
    ``None`` where :func:`block_ratio` is not measured: a latent model (its patch grid lies under
    the VAE's decoder) or patches of one pixel."""
    patch = (meta.network or {}).get("patch_size") if getattr(meta, "family", "tbcm") == "tbcm" else None
    return int(patch) if patch and int(patch) >= 2 and int(patch) < int(meta.image_size) else None
