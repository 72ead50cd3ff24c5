"""The FID Inception network (InceptionV3 as in the TensorFlow FID code), in plain torch.

FID is only comparable across papers when it is computed on the same network: the TensorFlow
graph ``inception-2015-12-05`` whose PyTorch port pytorch-fid and torch-fidelity load (the
file ``pt_inception-2015-12-05-6726825d.pth`` of pytorch-fid, the same weights as torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``). :class:`InceptionV3Features` has that network's
layout and parameter names exactly, so it loads either file as it is, and it reproduces its
forward pass up to the 2048-d pool3 features:

* uint8 images ``[N, 3, H, W]`` are resized to 299x299 with TensorFlow 1.x's bilinear resize
  (no half-pixel centres; what the TF FID graph and torch-fidelity do), then mapped to
  ``[-1, 1]`` by ``(x - 128) / 128``;
* it differs from torchvision's InceptionV3 in the pooling branches: average pools exclude the
  zero padding, and the last block (``Mixed_7c``) max-pools instead.

Nothing is downloaded: the weights file is a local path. :func:`save_inception_weights` writes a
file with the same names and shapes from a random initialisation (a stand-in for tests).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from ..errors import UserError, brief

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008  # the TF graph's classifier (1000 ImageNet classes + 8 unused); unused for FID
WEIGHTS_HINT = ("pass the FID Inception weights of pytorch-fid (pt_inception-2015-12-05-6726825d.pth) "
                "or torch-fidelity (weights-inception-2015-12-05-6726825d.pth), downloaded beforehand")


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, as in the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return Fn.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # TF's average pool divides by the number of real (not padded) pixels
    return Fn.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x)),
        ], 1)


class MixedB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            Fn.max_pool2d(x, 3, stride=2),
        ], 1)


class MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool_3x3(x))], 1)


class MixedD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, Fn.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches (Mixed_7b: average pool; Mixed_7c: max pool)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = Fn.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3),
            self.branch_pool(pooled),
        ], 1)


@contextmanager
def _fp32_convolutions(active: bool):
    """Full fp32 cuDNN convolutions inside (its TF32 default moves the features by ~1e-3);
    the new precision API where torch has it (mixing it with the legacy flag is an error)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if not active:
        yield
    elif conv is not None and hasattr(conv, "fp32_precision"):
        before = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


def resize_bilinear_tf1(x: Tensor, size: int) -> Tensor:
    """TensorFlow 1.x ``resize_bilinear`` (``align_corners=False``, no half-pixel centres):
    output pixel ``i`` samples the input at ``i * in / out``, the upper neighbour clamped to the
    edge. ``x`` is float ``[N, C, H, W]``; returns ``[N, C, size, size]``."""

    def axis(n_in: int):  # positions in float32 as TF computes them (bit-exact on CPU)
        pos = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = pos.long().clamp_max(n_in - 1)
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (pos - lo.float()).to(x.dtype)

    ylo, yhi, dy = axis(x.shape[2])
    xlo, xhi, dx = axis(x.shape[3])
    top, bottom = x[:, :, ylo], x[:, :, yhi]
    top = top[..., xlo] + (top[..., xhi] - top[..., xlo]) * dx
    bottom = bottom[..., xlo] + (bottom[..., xhi] - bottom[..., xlo]) * dx
    return top + (bottom - top) * dy[:, None]


class InceptionV3Features(nn.Module):
    """``forward(uint8 [N, 3, H, W]) -> float64 [N, 2048]``: the pool3 features FID uses.

    The parameter names equal pytorch-fid's / torch-fidelity's (``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_7c.branch_pool.bn.running_var``, ..., ``fc.weight``). Build it with
    :func:`load_inception`; as constructed it has random weights. ``num_features`` tells
    torchmetrics' ``FrechetInceptionDistance`` the feature width.
    """

    num_features = NUM_FEATURES

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, 32)
        self.Mixed_5c = MixedA(256, 64)
        self.Mixed_5d = MixedA(288, 64)
        self.Mixed_6a = MixedB(288)
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = MixedD(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_CLASSES)  # part of the weights file; FID does not use it

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        x = images.to(device=self.fc.weight.device, dtype=self.fc.weight.dtype)
        x = resize_bilinear_tf1(x, INPUT_SIZE)
        x = (x - 128) / 128
        with _fp32_convolutions(x.is_cuda):
            return self._features(x).double()

    def _features(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = Fn.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = Fn.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def _is_optional(key: str) -> bool:
    # older checkpoints (like the converted TF weights) predate BatchNorm's step counter
    return key.endswith("num_batches_tracked")


def load_inception(path: str | os.PathLike) -> InceptionV3Features:
    """The FID Inception network with the weights in ``path`` (a ``.pth`` state dict as
    pytorch-fid / torch-fidelity ship it, or a ``.safetensors`` file with the same names),
    frozen and in eval mode. Raises :class:`UserError` if the file is missing or does not match."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights file {path} does not exist: {WEIGHTS_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError("not a state dict of tensors")
    except Exception as exc:  # noqa: BLE001 - any read problem is the same user-facing error
        raise UserError(f"{path} is not a readable weights file ({brief(exc)}): {WEIGHTS_HINT}") from None
    model = InceptionV3Features()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_optional(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = ([f"missing {len(missing)} key(s), e.g. {missing[0]}"] if missing else []) + \
               ([f"{len(unexpected)} unknown key(s), e.g. {unexpected[0]}"] if unexpected else []) + \
               ([f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}"] if wrong else [])
    if problems:
        raise UserError(f"{path} does not hold the FID InceptionV3 weights ({'; '.join(problems)}): {WEIGHTS_HINT}")
    model.load_state_dict({k: state.get(k, v) for k, v in expected.items()})
    return model.requires_grad_(False).eval()


def random_inception_state_dict(seed: int = 0) -> dict[str, Tensor]:
    """A state dict with the names and shapes of the real weights file, randomly initialised
    (He-normal convolutions, so activations keep their scale through the 90-odd layers)."""
    gen = torch.Generator().manual_seed(seed)
    model = InceptionV3Features()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith(("bn.bias", "bn.running_mean")):
            value = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("bn.weight"):
            value = 1 + 0.1 * torch.randn(value.shape, generator=gen)
        elif key.startswith("fc."):
            value = 0.01 * torch.randn(value.shape, generator=gen)
        state[key] = value.contiguous()
    return state


def save_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a stand-in weights file (``torch.save`` of :func:`random_inception_state_dict`)
    that :func:`load_inception` accepts: for tests and dry runs, not for real FID numbers."""
    path = Path(path)
    torch.save(random_inception_state_dict(seed), str(path))
    return path
