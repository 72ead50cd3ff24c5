"""Shared fixtures: tiny real models with random weights, saved as real model folders."""

from __future__ import annotations

import pytest
import torch

from tbcm.models.bundle import Bundle, ModelMeta, save_bundle
from tbcm.models.builtin.dit import DiTConfig, TinyDiT
from tbcm.models.builtin.text import PromptEncoder

VOCAB = ["a", "handwritten", "digit", *[str(d) for d in range(10)]]


def tiny_network(guidance: bool = False, seed: int = 0, hidden: int = 32) -> TinyDiT:
    torch.manual_seed(seed)
    net = TinyDiT(DiTConfig(hidden=hidden, depth=2, heads=2, text_dim=16, guidance_embed=guidance))
    # adaLN-Zero starts as the zero function; give every weight a random value so tests see a
    # network that actually depends on x, t, the prompt and the guidance scale.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def tiny_encoder(seed: int = 0) -> PromptEncoder:
    torch.manual_seed(seed)
    return PromptEncoder(VOCAB, dim=16, max_words=8, heads=2)


@pytest.fixture
def tiny_teacher_dir(tmp_path):
    net, enc = tiny_network(), tiny_encoder()
    meta = ModelMeta(kind="teacher", sigma_d=0.5, channels=1, image_size=8,
                     network=net.config.to_dict(), prompt_encoder=enc.config())
    return save_bundle(Bundle(meta, net, enc), tmp_path / "teacher")


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """``|actual - expected| <= rel * max|expected|`` elementwise.

    For float32 results of the same maths through different kernels (batched vs single image,
    checkpointed vs not, another CPU's vector width): rounding scales with the values' magnitude,
    so a fixed ``atol`` passes on one machine and fails on another.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.detach().abs().max().clamp(min=torch.finfo(expected.dtype).tiny)
    err = (actual - expected).detach().abs().max()
    assert err <= rel * scale, f"max error {float(err):.3e} > {rel:g} x scale {float(scale):.3e}"


def assert_cli_error(argv, capsys) -> str:
    """Run the CLI on bad input: exit 2, one line on stderr, no traceback. Returns the line."""
    from tbcm.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("tbcm: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def one_thread():
    """One torch thread for the test (2-core CI runs tests beside each other's subprocesses)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
