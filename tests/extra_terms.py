"""Checks shared by the extra sample terms (the adversarial heads, the distribution-matching fake
score): exact resume and two DDP ranks, each against a straight / single-process run."""

from __future__ import annotations

import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller


def distiller(teacher_dir, overrides) -> Distiller:
    return Distiller(load_config(DistillConfig, None, [f"teacher={teacher_dir}", *overrides]))


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def join_or_kill(ctx, timeout: float, what: str) -> None:
    """Wait for the spawned processes of ``ctx``; fail the test (killing them) after ``timeout`` s."""
    deadline = time.time() + timeout
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the 2-process {what} did not finish in {timeout:g} s")


def spawn_two(worker, args: tuple, timeout: float, what: str) -> None:
    """Run ``worker(rank, *args)`` in 2 spawned processes; fail the test (killing them) after ``timeout`` s."""
    join_or_kill(mp.start_processes(worker, args=args, nprocs=2, start_method="spawn", join=False), timeout, what)


def assert_resume_bit_identical(teacher_dir, overrides, tmp_path, term: str) -> None:
    """4 straight steps == 2 steps, a checkpoint, a new distiller loading it, 2 more steps: the
    student and the loss term's own network (``d.term(term).module``) equal to the bit."""
    straight = distiller(teacher_dir, overrides)
    for _ in range(4):
        straight.train_step()
    first = distiller(teacher_dir, overrides)
    for _ in range(2):
        first.train_step()
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = distiller(teacher_dir, overrides)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=False))
    for _ in range(2):
        resumed.train_step()
    for a, b in ((straight.student, resumed.student), (straight.term(term).module, resumed.term(term).module)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k


def _term_worker(rank, world, init_file, teacher_dir, out_file, overrides, term, stat):
    import faulthandler
    import sys

    faulthandler.dump_traceback_later(90, exit=True, file=sys.stderr)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        d = distiller(teacher_dir, overrides)
        for _ in range(2):
            stats = d.train_step()
        torch.save({"term": flat(d.term(term).module), "student": flat(d.student), "stat": stats[stat]},
                   f"{out_file}.{rank}")
        del d
        dist.barrier()
    finally:
        dist.destroy_process_group()


def two_rank_states(tmp_path, teacher_dir, overrides, term: str, stat: str) -> tuple[dict, dict]:
    """Two DDP ranks take 2 steps: each rank's ``{"term", "student", "stat"}`` (flat parameters and
    the last step's ``stats[stat]``)."""
    init_file, out = tempfile.mktemp(dir=tmp_path), tmp_path / "rank"
    spawn_two(_term_worker, (2, init_file, str(teacher_dir), str(out), list(overrides), term, stat), 150,
              f"{term} run")
    return tuple(torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
