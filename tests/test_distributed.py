"""Two processes (gloo, CPU) take the same optimiser steps as one process on the same global
batch: gradients (the JVP-built targets included) are really synchronised and averaged."""

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.pairs.base import Pairs
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource
from tests.extra_terms import join_or_kill, spawn_two

K, PROMPTS = 4, 4
# Words both the tiny digits encoder (tests/conftest.py VOCAB) and the tiny Gemma tokenizer know.
PROMPTS_FILE = Path(tempfile.mkdtemp()) / "prompts.txt"
PROMPTS_FILE.write_text("a digit 1\na digit 2\na handwritten digit 3\na digit 4\na digit 5\n")


def _cfg(teacher_dir, parallel="ddp", *extra):
    return load_config(DistillConfig, None, [f"teacher={teacher_dir}", "optim.warmup_steps=0", "optim.grad_clip=0",
                                             "optim.lr=1e-3", f"parallel={parallel}", "threads=1", "text_cache=none",
                                             f"prompts={PROMPTS_FILE}", *extra])


REAL = ["sampler.tune=false", "prompts_per_step=2", f"pairs.route_points={K}", "cfg_scales=[3.0,5.0]", "pairs.pool_prompts=0"]


def _global_batches(d: Distiller, steps: int) -> list[Pairs]:
    """The same global batches in every process: a fixed-seed rollout, one trajectory masked out."""
    src = TrajectoryPairSource(d.teacher, d.conds, [3.0, 5.0], d.image_shape, TrajectoryConfig(route_points=K),
                               generator=torch.Generator().manual_seed(123))
    src.keep_final = True  # the default's endpoint term reads each pair's trajectory end
    batches = []
    for _ in range(steps):
        pairs = src.sample(torch.arange(PROMPTS))
        pairs.mask[: K - 1] = 0  # the first trajectory is "filtered": ranks keep different counts
        batches.append(pairs)
    return batches


def _shard(pairs: Pairs, rank: int, world: int) -> Pairs:
    """Trajectories rank::world of a prompt-major batch (K - 1 pairs per trajectory)."""
    idx = torch.cat([torch.arange(p * (K - 1), (p + 1) * (K - 1)) for p in range(rank, PROMPTS, world)])
    return Pairs(pairs.x_t[idx], pairs.t[idx], pairs.u[idx], pairs.cond.index(idx), pairs.w[idx], pairs.mask[idx],
                 pairs.prompt_ids[idx], x0=None if pairs.x0 is None else pairs.x0[idx])


def _worker(rank, world, init_file, teacher_dir, out_file, parallel, real_source=False, extra=()):
    import faulthandler
    import sys

    faulthandler.dump_traceback_later(60, exit=True, file=sys.stderr)  # a hung collective fails loudly
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if real_source:  # each rank's own prompt shard and generator, as `tbcm distill` runs
            d = Distiller(_cfg(teacher_dir, parallel, *REAL))
            for _ in range(2):
                stats = d.train_step()
        else:
            d = Distiller(_cfg(teacher_dir, parallel, *extra))
            torch.save(getattr(d.encoder, "prompts_encoded", -1), f"{out_file}.encoded{rank}")
            for pairs in _global_batches(d, 2):
                d.train_step(_shard(pairs, rank, world))
        teacher = {p.untyped_storage().data_ptr() for p in d.teacher.parameters()}
        for p in d.student.parameters():  # a LoRA base: unsharded, the teacher's own storage
            assert p.requires_grad or (not hasattr(p, "full_tensor") and p.untyped_storage().data_ptr() in teacher)
        state = {k: v.detach().clone() for k, v in d.student.state_dict().items()}
        if parallel == "fsdp2":  # sharded parameters: gather full tensors
            state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in state.items()}
        if real_source:
            state["logged_loss"] = torch.tensor(stats["loss"])
        if rank == 0:
            torch.save(state, out_file)
        del d  # free the DDP reducer / FSDP state while the process group is still alive
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Done and saved: leave without running C++ static destructors, where a gloo / FSDP helper
    # thread still joinable at interpreter exit aborts the process ("terminate called without an
    # active exception", seen once in six fresh-clone runs). Errors above still raise.
    sys.stdout.flush()
    os._exit(0)


def _two_process_weights(tmp_path, teacher_dir, parallel, real_source=False, extra=()):
    init_file = tempfile.mktemp(dir=tmp_path)
    out_file = tmp_path / "rank0.pt"
    spawn_two(_worker, (2, init_file, str(teacher_dir), str(out_file), parallel, real_source, tuple(extra)), 120, "run")
    return torch.load(out_file, weights_only=True)


@pytest.fixture
def sana_teacher_dir(tmp_path):
    from tests.models.families.tiny_diffusers import save_tiny_sana_pipeline

    return save_tiny_sana_pipeline(tmp_path / "sana")


LORA = ["student.lora_rank=4"]


@pytest.mark.parametrize("parallel,teacher,extra", [("ddp", "tbcm", []), ("fsdp2", "tbcm", []), ("fsdp2", "sana", []),
                                                    ("ddp", "tbcm", LORA), ("fsdp2", "tbcm", LORA)],
                         ids=["ddp", "fsdp2", "fsdp2-sana", "ddp-lora", "fsdp2-lora"])
def test_two_processes_match_one_process(tmp_path, request, parallel, teacher, extra):
    """... for the built-in kind of teacher, for a diffusers Sana teacher sharded by FSDP2, and for
    LoRA students (FSDP2 shards the adapters and leaves the frozen base, the teacher's, whole)."""
    tiny_teacher_dir = request.getfixturevalue("tiny_teacher_dir" if teacher == "tbcm" else "sana_teacher_dir")
    torch.set_num_threads(1)
    single = Distiller(_cfg(tiny_teacher_dir, "ddp", *extra))
    start = {k: v.clone() for k, v in single.student.state_dict().items()}
    for pairs in _global_batches(single, 2):
        single.train_step(pairs)
    expected = single.student.state_dict()
    got = _two_process_weights(tmp_path, tiny_teacher_dir, parallel, extra=extra)
    moved = max(float((expected[k] - start[k]).abs().max()) for k in expected)
    assert moved > 1e-4  # the steps did change the weights
    for name, tensor in expected.items():
        if name.endswith("attn2.to_k.bias"):
            # Softmax is shift-invariant, so a key bias has an exactly zero gradient: Adam turns its
            # rounding noise into lr-sized steps that differ between any two runs. Nothing to compare.
            continue
        assert torch.allclose(got[name], tensor, atol=2e-6, rtol=1e-5), name


def test_two_ranks_share_the_prompt_encoding_and_read_it_from_the_cache(tmp_path, sana_teacher_dir):
    """Streamed encodings: each prompt is encoded by one rank only, both ranks train on rows read
    from the disk cache, and the weights equal one process holding every encoding in memory."""
    from tbcm.models.text_cache import CachedConditions

    torch.set_num_threads(1)
    single = Distiller(_cfg(sana_teacher_dir))  # text_cache=none: all in memory
    for pairs in _global_batches(single, 2):
        single.train_step(pairs)
    cache = tmp_path / "text"
    got = _two_process_weights(tmp_path, sana_teacher_dir, "fsdp2", extra=[f"text_cache={cache}"])
    encoded = [torch.load(f"{tmp_path / 'rank0.pt'}.encoded{r}") for r in range(2)]
    # the 5 training prompts split 3 + 2 between the ranks (the grid prompts are training prompts);
    # the cache then holds them and the null prompt
    assert sorted(encoded) == [2, 3], encoded
    assert len(list(Path(cache).rglob("*.safetensors"))) == 6
    probe = Distiller(_cfg(sana_teacher_dir, "ddp", f"text_cache={cache}"))
    assert isinstance(probe.conds, CachedConditions) and probe.encoder.prompts_encoded == 0  # all cached
    _assert_same_weights(got, single.student.state_dict())


def _assert_same_weights(got, expected):
    for name, tensor in expected.items():
        if name.endswith("attn2.to_k.bias"):  # zero gradient: Adam amplifies rounding noise (see above)
            continue
        assert torch.allclose(got[name], tensor, atol=2e-6, rtol=1e-5), name


def test_two_ranks_with_their_own_prompt_shards_and_generators_match_one_process(tmp_path, tiny_teacher_dir):
    """Through the real pair path: the 2-rank run's union of per-rank batches (each rank's prompt
    slice, noise, routes and CFG draws) taken by one process gives the same weights."""
    from tbcm.pairs.build import rank_seed
    from tbcm.pairs.prompts import PromptSampler

    torch.set_num_threads(1)
    single = Distiller(_cfg(tiny_teacher_dir, "ddp", *REAL))
    cfg = single.cfg
    sources = [TrajectoryPairSource(single.teacher, single.conds, list(cfg.cfg_scales), single.image_shape, cfg.pairs,
                                    single.teacher_bundle.meta.blank_value,
                                    torch.Generator().manual_seed(rank_seed(cfg.seed, r)),
                                    PromptSampler(len(single.prompts), seed=cfg.seed, rank=r, world_size=2))
               for r in range(2)]
    for s in sources:
        s.keep_final = True  # the default's endpoint term reads each pair's trajectory end
    start = {k: v.clone() for k, v in single.student.state_dict().items()}
    for _ in range(2):
        stats = single.train_step(Pairs.cat([s.next_pairs(cfg.prompts_per_step) for s in sources]))
    expected = single.student.state_dict()
    assert max(float((expected[k] - start[k]).abs().max()) for k in expected) > 1e-4
    got = _two_process_weights(tmp_path, tiny_teacher_dir, "ddp", real_source=True)
    # rank 0 logs the loss of the whole global batch, not of its own half
    assert float(got.pop("logged_loss")) == pytest.approx(stats["loss"], rel=1e-5)
    _assert_same_weights(got, expected)


RUN = ["sampler.tune=false", "steps=30", "checkpoint_every=1", "keep_checkpoints=40", "log_every=1", "preview.seeds=1",
       "preview.teacher_steps=2", "preview.student_steps=[1]", "preview.prompts=[a digit 1]"]


def _run_worker(rank, world, init_file, teacher_dir, out, resume):
    import faulthandler
    import sys

    faulthandler.dump_traceback_later(120, exit=True, file=sys.stderr)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if resume:
            cfg = load_config(DistillConfig, Path(out) / "config.yaml")
        else:
            cfg = _cfg(teacher_dir, "fsdp2", *REAL, *RUN)
        Distiller(cfg).run(out, progress=False, resume=resume)
    finally:
        dist.destroy_process_group()


def _launch(tmp_path, teacher_dir, out, resume=False):
    init_file = tempfile.mktemp(dir=tmp_path)
    return mp.start_processes(_run_worker, args=(2, init_file, str(teacher_dir), str(out), resume), nprocs=2,
                              start_method="spawn", join=False)


def _join(ctx, seconds=180):
    join_or_kill(ctx, seconds, "run")


def test_a_killed_fsdp2_run_resumes_to_the_uninterrupted_weights(tmp_path, tiny_teacher_dir):
    from tbcm.checkpoint import list_checkpoints, load_checkpoint

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _join(_launch(tmp_path, tiny_teacher_dir, straight))
    ctx = _launch(tmp_path, tiny_teacher_dir, killed)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000003.pt").exists():
        assert time.time() < deadline and all(p.is_alive() for p in ctx.processes), "ended before the kill"
        time.sleep(0.02)
    for p in ctx.processes:
        p.kill()
    for p in ctx.processes:
        p.join()
    assert not (killed / "student").exists()  # killed mid-training
    last = list_checkpoints(killed / "checkpoints")[-1]
    assert load_checkpoint(last)["step"] < 30
    _join(_launch(tmp_path, tiny_teacher_dir, killed, resume=True))
    a = load_checkpoint(list_checkpoints(straight / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(killed / "checkpoints")[-1])
    assert a["step"] == b["step"] == 30
    for key in ("student", "ema"):
        _assert_same_weights(b[key], a[key])
