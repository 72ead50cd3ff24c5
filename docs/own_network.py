"""Distil your own flow-matching network with tbcm's library API: no model folder, no family.

Your network is any ``nn.Module`` called ``net(x, tau, cond) -> v``:

* ``x`` ``[B, C, H, W]``: the flow state ``x_tau = (1 - tau) x0 + tau noise``;
* ``tau`` ``[B]``: flow time in ``[0, 1]`` (0 = data, 1 = pure noise);
* ``cond`` ``[B, D]``: one condition vector per sample (a class or prompt embedding; the null
  condition of classifier-free guidance is whatever your network was trained with for "no
  condition" -- here the zero vector);
* ``v`` ``[B, C, H, W]``: the flow velocity ``v = noise - x0`` (so ``dx/dtau = v``).

tbcm works in TrigFlow units (angle ``t`` in ``[0, pi/2]``); :class:`~tbcm.models.teacher.Teacher`
and :class:`~tbcm.models.student.Student` convert in closed form. :class:`OwnNetwork` adapts your
module to what they call (``net(x_flow, timestep, cond, guidance=None)`` with a
:class:`~tbcm.models.condition.TextCondition`), and gives the student its guidance input: a
zero-initialised MLP of the CFG scale ``w`` added to ``cond``, so the untrained student computes
exactly your network's conditional velocity. The JVP of sCM runs through your network by
``torch.func.jvp``: use plain ops (no fused attention kernels, no BatchNorm).

Run ``python docs/own_network.py`` for a toy network; ``tests/test_own_network.py`` runs it too.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from tbcm.models.condition import TextCondition
from tbcm.models.student import Student
from tbcm.models.teacher import Teacher
from tbcm.objectives.scm import SCMConfig, scm_loss, tangent_ratio
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource
from tbcm.sampling import student_angles, student_sample


class OwnNetwork(nn.Module):
    """``forward(x_flow [B,C,H,W], tau [B], cond: TextCondition, guidance [B] | None) -> v``.

    ``cond.embeds`` is ``[B, 1, D]``: your condition vectors. With ``guidance_dim`` (students)
    the condition your network sees is ``cond + G(w)``, ``G``'s output layer zero at the start.
    """

    def __init__(self, net: nn.Module, cond_dim: int, guided: bool = False):
        super().__init__()
        self.net, self.cond_dim = net, cond_dim
        self.guidance = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, cond_dim)) if guided else None
        if guided:
            nn.init.zeros_(self.guidance[-1].weight)
            nn.init.zeros_(self.guidance[-1].bias)

    def forward(self, x_flow: Tensor, tau: Tensor, cond: TextCondition, guidance: Tensor | None = None) -> Tensor:
        c = cond.embeds[:, 0]
        if self.guidance is not None:
            if guidance is None:
                raise ValueError("a student network needs its CFG scale `guidance`")
            c = c + self.guidance(guidance.to(c.dtype)[:, None])
        return self.net(x_flow, tau, c)

    def with_guidance_embed(self) -> "OwnNetwork":
        """The student: a copy of your network's weights plus the zero-initialised guidance input."""
        return OwnNetwork(copy.deepcopy(self.net), self.cond_dim, guided=True)


class ConditionTable(nn.Module):
    """A prompt encoder over a fixed table: ``encode(prompts) -> TextCondition`` (``embeds [B, 1, D]``).
    ``""`` is the null condition (zeros). Replace it by your own prompt -> vector mapping."""

    def __init__(self, table: dict[str, Tensor]):
        super().__init__()
        self.table = {"": torch.zeros_like(next(iter(table.values()))), **table}

    def encode(self, prompts: list[str], progress: bool = False) -> TextCondition:
        unknown = [p for p in prompts if p not in self.table]
        if unknown:
            raise KeyError(f"prompts {unknown} are not in the table")
        embeds = torch.stack([self.table[p] for p in prompts])[:, None]
        return TextCondition(embeds, torch.ones(embeds.shape[:2]))


def distill(net: nn.Module, encoder: ConditionTable, prompts: list[str], image_shape: tuple[int, int, int],
            steps: int = 200, sigma_d: float = 0.5, cfg_scales: tuple[float, ...] = (1.0, 2.0, 3.0),
            prompts_per_step: int = 4, lr: float = 1e-4, seed: int = 0) -> Student:
    """TBCM-distil ``net`` into a few-step student; returns the student (``Student``).

    ``sigma_d`` is the data scale of TrigFlow (``x0_trig = sigma_d * x0`` of your network).
    Pairs come from the guided teacher's own trajectories (no images); each step is one sCM loss
    on ``prompts_per_step`` prompts' trajectories.
    """
    torch.manual_seed(seed)
    cond_dim = encoder.encode(prompts[:1]).embeds.shape[-1]
    own = OwnNetwork(net, cond_dim)
    teacher = Teacher(own, encoder, sigma_d, timestep_scale=1.0)  # your network takes tau itself
    # the Teacher froze `own`; the student's copy trains
    student = Student(own.with_guidance_embed(), sigma_d, timestep_scale=1.0).requires_grad_(True).train()
    pairs = TrajectoryPairSource(teacher, encoder.encode(prompts), list(cfg_scales), image_shape,
                                 TrajectoryConfig(route_points=8, pool_prompts=0),
                                 generator=torch.Generator().manual_seed(seed))
    objective = SCMConfig(warmup_steps=max(1, steps // 4))
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    for step in range(steps):
        loss, _ = scm_loss(student, pairs.next_pairs(prompts_per_step), sigma_d, tangent_ratio(step, objective),
                           objective)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval()


@torch.no_grad()
def generate(student: Student, encoder: ConditionTable, prompts: list[str], image_shape: tuple[int, int, int],
             steps: int = 2, w: float = 2.0, seed: int = 0) -> Tensor:
    """``[len(prompts), C, H, W]`` samples in your network's data units, ``steps`` student steps."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(prompts), *image_shape, generator=g)
    x0 = student_sample(student, encoder.encode(prompts), torch.full((len(prompts),), w), noise,
                        student_angles(steps), generator=g)
    return x0 / student.sigma_d


class ToyVelocity(nn.Module):
    """A small convolutional ``net(x [B,1,8,8], tau [B], cond [B,D]) -> v``: stands in for yours."""

    def __init__(self, cond_dim: int = 8, width: int = 16):
        super().__init__()
        self.film = nn.Linear(cond_dim + 1, 2 * width)
        self.inp, self.out = nn.Conv2d(1, width, 3, padding=1), nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor, tau: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(torch.cat([cond, tau[:, None]], dim=1)).chunk(2, dim=1)
        h = torch.tanh(self.inp(x) * (1 + scale[..., None, None]) + shift[..., None, None])
        return self.out(h)


if __name__ == "__main__":
    torch.manual_seed(0)
    table = {f"class {i}": torch.randn(8) for i in range(4)}
    encoder = ConditionTable(table)
    student = distill(ToyVelocity(), encoder, list(table), (1, 8, 8), steps=20)
    print("2-step samples:", tuple(generate(student, encoder, list(table), (1, 8, 8)).shape))
