"""Checks every diffusers family's tests run the same way (one copy, not one per family)."""

from __future__ import annotations

import pytest
import torch

from tbcm.models.student import Student
from tbcm.objectives.scm import jvp_autograd


def student_jvp_fd_errors(teacher, prompts: list[str], x: torch.Tensor, t: torch.Tensor) -> list[float]:
    """Relative error of the student's JVP (``torch.func.jvp``) against central finite differences
    at ``h = 1e-3, 5e-4, 2.5e-4``, in float64, with a random (non-zero) guidance embedder so ``w``
    matters. Also checks the JVP's primal output equals a plain forward."""
    net = teacher.network.with_guidance_embed()
    with torch.no_grad():  # make w matter
        torch.nn.init.normal_(net.transformer.time_text_embed.guidance_embedder.linear_2.weight, std=0.1)
    student = Student(net, teacher.meta.sigma_d, teacher.meta.timestep_scale).double()
    cond = teacher.encoder.encode(prompts).apply(lambda z: z.double())
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = torch.tensor([3.0, 5.0], dtype=torch.float64)
    fn = lambda xx, tt: student(xx, tt, cond, w)  # noqa: E731
    out, dout = jvp_autograd(fn, (x, t), (u, torch.ones_like(t)))
    with torch.no_grad():
        assert torch.equal(out, fn(x, t))

        def fd_error(h):
            fd = (fn(x + h * u, t + h) - fn(x - h * u, t - h)) / (2 * h)
            return float((dout - fd).norm() / dout.norm())

        return [fd_error(h) for h in (1e-3, 5e-4, 2.5e-4)]


def cache_round_trip(make_encoder, prompts: list[str], cache_dir, monkeypatch):
    """Encode ``prompts`` through a disk cache, then again with a fresh encoder that must not
    re-encode anything; the two encodings are equal. Returns the first."""
    first = make_encoder(cache_dir).encode(prompts)
    assert len(list(cache_dir.rglob("*.safetensors"))) == len(set(prompts))  # one file per distinct prompt
    second_encoder = make_encoder(cache_dir)
    monkeypatch.setattr(second_encoder, "_encode_uncached", lambda p: pytest.fail(f"re-encoded {p}"))
    second = second_encoder.encode(prompts)
    for a, b in ((first.embeds, second.embeds), (first.mask, second.mask), (first.pooled, second.pooled)):
        assert torch.equal(a, b)
    return first
