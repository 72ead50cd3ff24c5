"""The spectrum ratio on cases whose answer is known: the same images read 1, added noise raises
the high bands, a blur lowers them."""

import pytest
import torch
import torch.nn.functional as Fn

from tbcm.evaluation.spectrum import band_power, spectrum_ratio


def _smooth_images(n=64, size=16, seed=0):
    # smooth random fields: low-pass noise, so the high bands hold little power to begin with
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, size // 4, size // 4, generator=g)
    return Fn.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_the_same_images_read_one_in_every_band():
    x = _smooth_images()
    assert spectrum_ratio(x, x) == [1.0] * 4
    # brightness is not structure: a constant offset changes nothing
    assert torch.allclose(torch.tensor(spectrum_ratio(x + 0.7, x), dtype=torch.float64), torch.ones(4, dtype=torch.float64))


def test_added_noise_raises_the_high_bands_most():
    x = _smooth_images()
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ratio = spectrum_ratio(noisy, x)
    assert all(r > 1 for r in ratio) and ratio[-1] > ratio[0] and ratio[-1] > 2


def test_a_blur_lowers_the_high_bands():
    x = _smooth_images(seed=2) + 0.2 * torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    blurred = Fn.conv2d(Fn.pad(x, (1, 1, 1, 1), mode="circular"), kernel, groups=3)
    ratio = spectrum_ratio(blurred, x)
    assert ratio[-1] < 0.5 and ratio[-1] < ratio[0] <= 1.0 + 1e-9


def test_white_noise_has_a_flat_spectrum():
    noise = torch.randn(256, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    power = band_power(noise)
    assert float(power.max() / power.min()) < 1.1  # every band within 10% for white noise


def test_the_grid_caption_reads_the_spectrum_ratio_and_sits_under_the_panel_title():
    from PIL import Image

    from tbcm.grids import panels
    from tbcm.train.outputs import spectrum_caption

    g = torch.Generator().manual_seed(0)
    teacher = torch.nn.functional.avg_pool2d(torch.randn(24, 1, 16, 16, generator=g), 3, 1, 1)
    assert spectrum_caption(teacher, teacher) == "spectrum 1.00 1.00 1.00 1.00"
    noisy = [float(v) for v in spectrum_caption(teacher + 0.3 * torch.randn(teacher.shape, generator=g),
                                                teacher).split()[1:]]
    assert noisy[-1] > 2 and noisy[-1] > noisy[0]
    one = panels([("a", Image.new("L", (40, 30))), ("b", Image.new("L", (40, 30)))])
    two = panels([("a\nspectrum 1.00", Image.new("L", (40, 30))), ("b", Image.new("L", (40, 30)))])
    assert two.height == one.height + 12


def test_the_block_ratio_sees_blocks_on_the_patch_grid_and_not_elsewhere():
    from tbcm.evaluation.spectrum import block_ratio, blockiness

    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(16, 3, 32, 32, generator=g), 5, 1, 2)
    assert block_ratio(smooth, smooth, 4) == pytest.approx(1.0)
    assert blockiness(smooth, 4) == pytest.approx(1.0, abs=0.1)  # a smooth image has no grid
    # a constant offset per 4x4 cell: steps on the 4-pixel grid and nowhere else
    cells = torch.randn(16, 3, 8, 8, generator=g).repeat_interleave(4, -1).repeat_interleave(4, -2)
    blocky = smooth + 0.5 * cells
    assert block_ratio(blocky, smooth, 4) > 2
    # the same cells on a grid shifted by 2 pixels read as no blocks on the patch grid's own lines
    shifted = smooth + 0.5 * torch.roll(cells, shifts=(2, 2), dims=(-2, -1))
    assert block_ratio(shifted, smooth, 4) < block_ratio(blocky, smooth, 4) / 2
    with pytest.raises(ValueError):
        blockiness(smooth, 1)


def test_the_patch_grid_is_measured_on_pixel_models_only():
    from types import SimpleNamespace

    from tbcm.evaluation.spectrum import pixel_patch
    from tbcm.train.outputs import spectrum_caption

    assert pixel_patch(SimpleNamespace(family="tbcm", network={"patch_size": 4}, image_size=32)) == 4
    assert pixel_patch(SimpleNamespace(family="tbcm", network={"patch_size": 1}, image_size=32)) is None
    assert pixel_patch(SimpleNamespace(family="flux", network={"patch_size": 2}, image_size=16)) is None
    x = torch.nn.functional.avg_pool2d(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)), 3, 1, 1)
    assert spectrum_caption(x, x, 4) == "spectrum 1.00 1.00 1.00 1.00 blocks 1.00"
