"""The spectrum ratio on cases whose answer is known: the same images read 1, added noise raises
the high bands, a blur lowers them."""

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
