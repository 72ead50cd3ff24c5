"""The discrepancy analysis against closed forms."""

import math

import torch

from tbcm.analysis import discrepancy, equivalent_noise, frechet_to_isotropic
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher


def test_frechet_to_isotropic_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(200000, 4, generator=g, dtype=torch.float64)
    assert frechet_to_isotropic(x, 0.5) < 1e-3
    assert abs(frechet_to_isotropic(x + 0.3, 0.5) - 4 * 0.09) < 5e-3  # ||mu||^2
    assert abs(frechet_to_isotropic(2 * x, 0.5) - 4 * 0.5**2) < 1e-2  # D (s - sigma)^2 with s = 1


def test_equivalent_noise_inverts_forward_noising():
    g = torch.Generator().manual_seed(1)
    x0, z = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = torch.rand(5, generator=g) * 1.5 + 0.05
    x_t = torch.cos(t)[:, None] * x0 + torch.sin(t)[:, None] * z
    assert torch.allclose(equivalent_noise(x_t, t, x0), z, atol=1e-5)


def test_discrepancy_rows(tiny_teacher_dir):
    b = load_bundle(tiny_teacher_dir, expect_kind="teacher")
    teacher = Teacher.from_bundle(b)
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    real = 0.5 * (torch.rand(100, 1, 8, 8) * 2 - 1)
    rows = discrepancy(teacher, conds, real, cfg_scale=3.0, route_points=6, bins=3, trajectories=40)
    assert {r.space for r in rows} == {"generation", "diffusion"}
    assert all(0 <= r.t_low < r.t_high <= math.pi / 2 + 1e-6 for r in rows)
    assert sum(r.count for r in rows if r.space == "generation") == 40 * 5
    # forward-noised data: the equivalent noise is N(0, sigma_d^2) by construction
    for r in rows:
        if r.space == "diffusion":
            assert abs(r.std - 0.5) < 0.05 and abs(r.mean) < 0.05


def test_discrepancy_command(tmp_path, tiny_teacher_dir, capsys):
    from tbcm.cli import main

    out = tmp_path / "disc"
    assert main(["discrepancy", "--out", str(out), "--trajectories", "20", "--bins", "2",
                 f"teacher={tiny_teacher_dir}", "pairs.route_points=4"]) == 0
    assert {p.name for p in out.iterdir()} == {"discrepancy.md", "discrepancy.json", "discrepancy.png"}
    assert "| generation |" in capsys.readouterr().out
    assert main(["discrepancy", "--out", str(out), f"teacher={tiny_teacher_dir}"]) == 2  # exists, no --overwrite
