"""The paper's "diffusion-generation space discrepancy", measured.

Two populations of noisy states ``x_t`` at the same angles ``t``:

* generation space -- states of the teacher's own guided trajectories (what TBCM trains on, and
  what the student meets when it samples); ``x0_hat`` is the trajectory's final sample;
* diffusion space -- real images forward-noised, ``x_t = cos t x0 + sin t z`` (what sCM and
  Sana-Sprint train on); ``x0_hat`` is the real image.

For each, the equivalent noise ``n = (x_t - cos t x0_hat) / sin t`` is what forward diffusion
would have had to add to ``x0_hat`` to reach ``x_t``.  In diffusion space it is ``z`` itself,
``N(0, sigma_d^2 I)`` by construction; in generation space it is whatever the teacher's ODE
produced.  Per bin of ``t``: its mean, its std and the Frechet distance of its distribution to
``N(0, sigma_d^2 I)`` (over pixels, ``D = C*H*W`` dimensions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .sampling import rollout
from .trigflow import forward_noise, jitter_route_official, official_reference_route


def equivalent_noise(x_t: Tensor, t: Tensor, x0_hat: Tensor) -> Tensor:
    """``(x_t - cos t x0_hat) / sin t`` for ``x_t``, ``x0_hat`` ``[N, ...]`` and ``t`` ``[N]`` (radians)."""
    tb = t.reshape(-1, *([1] * (x_t.ndim - 1)))
    return (x_t - torch.cos(tb) * x0_hat) / torch.sin(tb)


def frechet_to_isotropic(samples: Tensor, sigma: float) -> float:
    """Frechet distance between the Gaussian fit of ``samples`` ``[N, D]`` and ``N(0, sigma^2 I)``.

    ``||mu||^2 + tr(S) + D sigma^2 - 2 sigma tr(S^(1/2))`` (float64, eigenvalues of S).
    """
    x = samples.double()
    mu = x.mean(0)
    cov = torch.cov(x.T)
    eig = torch.linalg.eigvalsh(cov).clamp(min=0)
    d = x.shape[1]
    return float(mu @ mu + eig.sum() + d * sigma**2 - 2 * sigma * eig.sqrt().sum())


@dataclass
class BinStats:
    t_low: float
    t_high: float
    space: str  # "generation" (teacher trajectories) or "diffusion" (forward-noised real data)
    count: int
    mean: float
    std: float
    frechet: float


@torch.no_grad()
def discrepancy(teacher, conds, real_x0: Tensor, cfg_scale: float, route_points: int = 16,
                shift: float = 2.5, bins: int = 6, trajectories: int = 256, seed: int = 0) -> list[BinStats]:
    """Per-``t``-bin statistics of the equivalent noise in both spaces (see the module docstring).

    ``conds``: prompt conditions to roll out (cycled); ``real_x0`` ``[M, C, H, W]`` real samples in
    TrigFlow space. Diffusion-space states use the same angles as the trajectory states.
    """
    gen = torch.Generator().manual_seed(seed)
    sd = teacher.sigma_d
    ids = torch.arange(trajectories) % len(conds)
    cond = conds.index(ids)
    w = torch.full((trajectories,), float(cfg_scale))
    route = jitter_route_official(official_reference_route(route_points, shift), gen, trajectories).float()
    noise = torch.randn((trajectories, *real_x0.shape[1:]), generator=gen)
    traj = rollout(lambda x, t: teacher.velocity(x, t, cond, w), sd * noise, route)
    k = route_points - 1  # drop the pure-noise point, as the pair source does
    states = traj.states[1:].transpose(0, 1).reshape(trajectories * k, -1)
    t = route[:, 1:].reshape(-1)
    final = traj.final.reshape(trajectories, -1).repeat_interleave(k, 0)
    spaces = {"generation": equivalent_noise(states, t, final)}
    pick = torch.randint(real_x0.shape[0], (t.shape[0],), generator=gen)
    x0 = real_x0[pick].reshape(t.shape[0], -1)
    z = sd * torch.randn(x0.shape, generator=gen)
    spaces["diffusion"] = equivalent_noise(forward_noise(x0, t, z), t, x0)

    edges = torch.linspace(0, math.pi / 2, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        sel = (t > lo) & (t <= hi)
        for space, n in spaces.items():
            chunk = n[sel]
            if chunk.shape[0] < 2:
                continue
            rows.append(BinStats(lo, hi, space, int(chunk.shape[0]), float(chunk.mean()), float(chunk.std()),
                                 frechet_to_isotropic(chunk, sd)))
    return rows


def markdown_table(rows: list[BinStats], sigma_d: float) -> str:
    lines = [f"| t bin (rad) | space | states | mean | std (N(0, sigma_d^2): {sigma_d:g}) | Frechet to N(0, sigma_d^2 I) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.t_low:.2f}-{r.t_high:.2f} | {r.space} | {r.count} | {r.mean:+.3f} | {r.std:.3f} | "
                     f"{r.frechet:.2f} |")
    return "\n".join(lines)


def plot(rows: list[BinStats], sigma_d: float, path) -> None:
    """Std and Frechet distance of the equivalent noise against t, one line per space (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for space, style in (("generation", "o-"), ("diffusion", "s--")):
        sel = [r for r in rows if r.space == space]
        mid = [(r.t_low + r.t_high) / 2 for r in sel]
        axes[0].plot(mid, [r.std for r in sel], style, label=space)
        axes[1].plot(mid, [r.frechet for r in sel], style, label=space)
    axes[0].axhline(sigma_d, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="t (rad)", ylabel="std of equivalent noise", title="std (dotted: sigma_d)")
    axes[1].set(xlabel="t (rad)", ylabel="Frechet distance", title="distance to N(0, sigma_d^2 I)")
    axes[1].set_yscale("symlog", linthresh=0.1)
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows_as_dicts(rows: list[BinStats]) -> list[dict]:
    return [asdict(r) for r in rows]


def write_report(cfg, out, trajectories: int = 256, bins: int = 6, overwrite: bool = False) -> list[BinStats]:
    """``tbcm discrepancy``: the table (markdown + JSON) and the plot (PNG) into folder ``out``.

    ``cfg`` is a DistillConfig: teacher, prompts, ``forward.data`` (the real images),
    ``pairs.route_points`` / ``pairs.shift`` (the route) and ``sampler.cfg_scale`` (the guidance).
    """
    import json

    from .data import load_training_data
    from .models.loading import load_teacher_and_prompts
    from .outputs import staged_output_dir

    bundle, teacher, _, conds = load_teacher_and_prompts(cfg)
    meta = bundle.meta
    data = load_training_data(cfg.forward.data, meta.image_size, cfg.forward.prompt_template)
    rows = discrepancy(teacher, conds, meta.sigma_d * data.images, cfg.sampler.cfg_scale,
                       cfg.pairs.route_points, cfg.pairs.shift, bins, trajectories, cfg.seed)
    with staged_output_dir(out, overwrite) as tmp:
        (tmp / "discrepancy.json").write_text(json.dumps(rows_as_dicts(rows), indent=1) + "\n")
        (tmp / "discrepancy.md").write_text(markdown_table(rows, meta.sigma_d) + "\n")
        plot(rows, meta.sigma_d, tmp / "discrepancy.png")
    return rows
