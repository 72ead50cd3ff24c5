"""Exact resume after SIGKILL, atomic checkpoints, and the run's own stops (non-finite steps,
failed saves) leaving the last good checkpoint loadable."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tbcm.checkpoint import list_checkpoints, load_checkpoint
from tbcm.cli import main
from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.errors import TrainingStopped

RUN = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "preview.seeds=1", "preview.teacher_steps=2",
       "preview.student_steps=[1]", "log_every=1", "checkpoint_every=2", "keep_checkpoints=2", "threads=1"]


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tbcm.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


ALL_TERMS = ["objective.endpoint.weight=0.1", "objective.adversarial.weight=0.5", "objective.adversarial.samples=2",
             "objective.distribution_matching.weight=0.1", "objective.distribution_matching.samples=2"]


@pytest.mark.parametrize("terms", [[], ALL_TERMS, ["student.lora_rank=4", *ALL_TERMS]],
                         ids=["scm", "every_term", "lora_every_term"])
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, tiny_teacher_dir, terms):
    common = [f"teacher={tiny_teacher_dir}", "steps=12", *RUN, *terms]
    straight = tmp_path / "straight"
    assert _cli("distill", "--out", str(straight), "--no-progress", *common).wait(timeout=300) == 0

    killed = tmp_path / "killed"
    proc = _cli("distill", "--out", str(killed), "--no-progress", *common)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step_00000006.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "student").exists()  # it really died mid-training
    for ckpt in list_checkpoints(killed / "checkpoints"):
        load_checkpoint(ckpt)  # every checkpoint on disk loads
    resumed = _cli("distill", "--resume", str(killed), "--no-progress")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    a = load_checkpoint(list_checkpoints(straight / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(killed / "checkpoints")[-1])
    assert a["step"] == b["step"] == 12
    for key in ("student", "ema"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], atol=1e-6), (key, name)
    for term, module in (("adversarial", "heads"), ("distribution_matching", "fake")):
        assert (term in a) == bool(terms) == (term in b)
        for name, tensor in a.get(term, {}).get(module, {}).items():  # each term's own network
            assert torch.allclose(tensor, b[term][module][name], atol=1e-6), (term, name)
    steps = [int(line.split(",")[0]) for line in (killed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 13))  # no gaps, no duplicates across the restart
    assert len(list_checkpoints(killed / "checkpoints")) == 2  # keep_checkpoints


def test_resume_extends_a_finished_run_and_needs_a_checkpoint(tmp_path, tiny_teacher_dir, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}", "steps=2", *RUN]) == 0
    assert main(["distill", "--resume", str(out), "--no-progress", "steps=4"]) == 0
    assert load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["step"] == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["distill", "--resume", str(empty)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def _distiller(teacher_dir, *extra):
    return Distiller(load_config(DistillConfig, None, [f"teacher={teacher_dir}", *RUN, *extra]))


def test_non_finite_steps_in_a_row_stop_the_run_with_the_last_good_checkpoint(tmp_path, tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir, "steps=20", "checkpoint_every=1", "max_consecutive_skips=3")
    real = d.source.next_pairs

    def poisoned_after_two(n):
        pairs = real(n)
        if d.step >= 2:
            pairs.u[:] = float("nan")
        return pairs

    d.source.next_pairs = poisoned_after_two
    good_after_two = {}

    real_step = d.train_step

    def spy():
        stats = real_step()
        if d.step == 2:
            good_after_two.update({k: v.clone() for k, v in d.student.state_dict().items()})
        return stats

    d.train_step = spy
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row at step 5"):
        d.run(tmp_path / "run", progress=False)
    last = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert last["skipped"] == 2  # written before the third skip stopped the run
    for name, tensor in last["student"].items():
        assert torch.isfinite(tensor).all() and torch.equal(tensor, good_after_two[name])


def test_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path, tiny_teacher_dir, monkeypatch):
    d = _distiller(tiny_teacher_dir, "steps=6")
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingStopped, match="No space left on device.*step_00000002.pt"):
        d.run(tmp_path / "run", progress=False)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["step_00000002.pt"]  # no temp file left behind
    assert load_checkpoint(folder / "step_00000002.pt")["step"] == 2


def test_relative_paths_are_saved_absolute_so_resume_works_from_elsewhere(tmp_path, tiny_teacher_dir, monkeypatch):
    import shutil

    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_teacher_dir, work / "teacher")
    (work / "p.txt").write_text("a handwritten digit 1\na handwritten digit 2\n")
    monkeypatch.chdir(work)
    assert main(["distill", "--out", "run", "--no-progress", "teacher=teacher", "prompts=p.txt", "steps=2", *RUN]) == 0
    saved = load_config(DistillConfig, work / "run" / "config.yaml")
    assert saved.teacher == str(work / "teacher") and saved.prompts == str(work / "p.txt")
    monkeypatch.chdir(tmp_path)
    assert main(["distill", "--resume", str(work / "run"), "--no-progress", "steps=3"]) == 0


def test_progress_grids_during_training_leave_the_run_bit_identical(tmp_path, tiny_teacher_dir):
    common = [f"teacher={tiny_teacher_dir}", "steps=4", *RUN, "preview.prompts=[a handwritten digit 1]"]
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    assert main(["distill", "--out", str(plain), "--no-progress", *common]) == 0
    assert main(["distill", "--out", str(watched), "--no-progress", *common, "preview.every=2"]) == 0
    assert sorted(p.name for p in (watched / "samples").iterdir()) == ["step_00000002.png"]  # the end has samples.png
    a = load_checkpoint(list_checkpoints(plain / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(watched / "checkpoints")[-1])
    for key in ("student", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
