"""The scale-out paths as a user runs them: torchrun with 2 processes, the trajectory cache
command feeding training, and the precision / memory options."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tbcm.checkpoint import list_checkpoints, load_checkpoint
from tbcm.cli import main
from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.errors import UserError

from .conftest import assert_close_to_scale

SMALL = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "preview.seeds=1", "preview.teacher_steps=2",
         "preview.student_steps=[1]", "log_every=1", "threads=1"]


def test_torchrun_two_processes_end_to_end(tmp_path, tiny_teacher_dir):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "tbcm.cli", "distill",
                           "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}", "steps=3", *SMALL],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "student" / "model.yaml").is_file() and (out / "samples.png").is_file()
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert state["world_size"] == 2 and len(state["sources"]) == 2
    # each rank drew its own noise: their pair generators are in different states
    assert not torch.equal(state["sources"][0]["generator"], state["sources"][1]["generator"])


def test_trajectories_command_feeds_training(tmp_path, tiny_teacher_dir, capsys):
    cache = tmp_path / "cache"
    args = ["trajectories", "--out", str(cache), "--no-progress", f"teacher={tiny_teacher_dir}",
            "pairs.route_points=4", "cache.shards=2", "cache.prompts_per_shard=3"]
    assert main(args) == 0
    shards = sorted(p.name for p in cache.glob("shard_*.safetensors"))
    assert shards == ["shard_00000.safetensors", "shard_00001.safetensors"]
    mtimes = [p.stat().st_mtime_ns for p in cache.glob("shard_*")]
    assert main(args) == 0  # rerun: nothing to do
    assert [p.stat().st_mtime_ns for p in cache.glob("shard_*")] == mtimes
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}", "steps=3",
                 "source=cache", f"cache.dir={cache}", *SMALL]) == 0
    assert (out / "student" / "network.safetensors").is_file()
    (cache / "shard_00001.safetensors").write_bytes(b"garbage")
    rc = main(["distill", "--out", str(tmp_path / "run2"), "--no-progress", f"teacher={tiny_teacher_dir}",
               "steps=4", "source=cache", f"cache.dir={cache}", *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and "shard_00001.safetensors" in err


@pytest.mark.parametrize("option", ["precision=bf16", "grad_checkpointing=true"])
def test_precision_and_memory_options_train(tiny_teacher_dir, option):
    d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "optim.warmup_steps=0", option,
                                                    *SMALL]))
    before = [p.detach().clone() for p in d.student.parameters()]
    stats = d.train_step()
    assert stats["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, d.student.parameters()))


def test_grad_checkpointing_gives_the_same_gradient(tiny_teacher_dir):
    grads = []
    for flag in ("false", "true"):
        d = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", f"grad_checkpointing={flag}",
                                                        "optim.lr=1e-12", *SMALL]))
        pairs = d.source.next_pairs(2)
        from tbcm.objectives.scm import scm_loss

        loss, _ = scm_loss(d.model, pairs, d.sigma_d, 1.0, d.cfg.objective, jvp_student=d.student)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in d.student.parameters() if p.grad is not None]))
    assert_close_to_scale(grads[0], grads[1])


def test_came_takes_a_step_and_resumes_exactly(tiny_teacher_dir):
    args = [f"teacher={tiny_teacher_dir}", "optim.name=came", "optim.betas=[0.9,0.999,0.9999]", "optim.lr=1e-3",
            "prompts_per_step=2", "pairs.route_points=4", "threads=1", "optim.warmup_steps=0"]
    d = Distiller(load_config(DistillConfig, None, args))
    assert type(d.optimizer).__name__ == "CAME"
    before = {k: v.clone() for k, v in d.student.state_dict().items()}
    d.train_step()
    assert max(float((v - before[k]).abs().max()) for k, v in d.student.state_dict().items()) > 1e-5
    import copy

    state = copy.deepcopy(d.state_dict())  # on the CPU the state holds the live tensors
    d.train_step()
    again = Distiller(load_config(DistillConfig, None, args))
    again.load_state_dict(state)
    again.train_step()
    for k, v in d.student.state_dict().items():
        assert torch.equal(v, again.student.state_dict()[k]), k
    with pytest.raises(UserError, match="optim.betas"):
        load_config(DistillConfig, None, ["optim.name=came"])  # two betas are AdamW's
