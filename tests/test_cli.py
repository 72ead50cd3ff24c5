"""The command line end to end on tiny real models, and its behaviour on bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tbcm.cli import main

from .conftest import assert_cli_error

FAST = ["sampler.tune=false", "steps=2", "prompts_per_step=2", "pairs.route_points=4", "preview.seeds=2", "preview.teacher_steps=3",
        "preview.prompts=[a handwritten digit 3,a handwritten digit 8]", "log_every=1"]


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("a handwritten digit 3\n\na handwritten digit 8\n")
    return p


def test_distill_then_sample(tmp_path, tiny_teacher_dir, prompts_file, capsys):
    out = tmp_path / "run"
    rc = main(["distill", "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}",
               f"prompts={prompts_file}", *FAST])
    assert rc == 0
    for name in ("config.yaml", "metrics.csv", "samples.png", "student/model.yaml", "student/network.safetensors"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("samples_*.png")) == [
        "samples_student_1_step.png", "samples_student_2_steps.png", "samples_student_4_steps.png",
        "samples_teacher_3_steps.png"]
    umask = os.umask(0)
    os.umask(umask)
    for f in (out / "samples.png", out / "student", out / "student" / "network.safetensors"):
        want = (0o777 if f.is_dir() else 0o666) & ~umask  # atomic writes keep normal permissions
        assert f.stat().st_mode & 0o777 == want, f
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 3
    # the student's weights moved away from the teacher's
    teacher_w = load_file(str(tiny_teacher_dir / "network.safetensors"))
    student_w = load_file(str(out / "student" / "network.safetensors"))
    assert any(not torch.equal(teacher_w[k], student_w[k]) for k in teacher_w)
    assert "guidance_embed.mlp.0.weight" in student_w

    png = tmp_path / "x.png"
    rc = main(["sample", "--student", str(out / "student"), "--prompt", "a handwritten digit 3", "--steps", "2",
               "--n", "3", "--seed", "5", "--out", str(png)])
    assert rc == 0
    im = Image.open(png)
    assert im.size == (1 + 3 * (8 * 4 + 1), 1 + 8 * 4 + 1)
    # same seed, same picture; another seed, another picture
    png2, png3 = tmp_path / "y.png", tmp_path / "z.png"
    main(["sample", "--student", str(out), "--prompts", str(prompts_file), "--n", "3", "--seed", "5", "--steps", "2",
          "--out", str(png2)])
    main(["sample", "--student", str(out), "--prompts", str(prompts_file), "--n", "3", "--seed", "6", "--steps", "2",
          "--out", str(png3)])
    a, b, c = (np.asarray(Image.open(p)) for p in (png, png2, png3))
    assert np.array_equal(a, b[: a.shape[0]])
    assert not np.array_equal(b, c)


@pytest.mark.parametrize("override,needle", [
    ("steps=0", "steps=0"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lrr=1", "did you mean 'optim.lr'"),
    ("nonsense=3", "unknown config key 'nonsense'"),
    ("steps=many", "steps"),
    ("objective.jvp=magic", "objective.jvp"),
    ("steps", "key=value"),
    ("pairs.renoised_points=2", "'pairs.renoised_points' was removed"),
    ("objective.endpoint.weight=-1", "objective.endpoint.weight"),
])
def test_bad_config_values_exit_2_and_write_nothing(tmp_path, override, needle, capsys):
    out = tmp_path / "run"
    err = assert_cli_error(["distill", "--out", str(out), override], capsys)
    assert needle in err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_bad_teacher_and_prompts(tmp_path, tiny_teacher_dir, capsys):
    out = tmp_path / "run"
    assert "does not exist" in assert_cli_error(["distill", "--out", str(out), f"teacher={tmp_path / 'nope'}"], capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.yaml").write_text("{{{ not yaml")
    assert "malformed" in assert_cli_error(["distill", "--out", str(out), f"teacher={broken}"], capsys)
    (broken / "model.yaml").write_text((tiny_teacher_dir / "model.yaml").read_text())
    assert "weights" in assert_cli_error(["distill", "--out", str(out), f"teacher={broken}"], capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert "no prompts" in assert_cli_error(["distill", "--out", str(out), f"prompts={empty}"], capsys)
    cats = tmp_path / "cats.txt"
    cats.write_text("a handwritten digit 1\na photo of a cat\n")
    err = assert_cli_error(["distill", "--out", str(out), f"prompts={cats}"], capsys)
    assert "'photo'" in err and "use only these words" in err
    assert not out.exists()


def test_existing_output_is_refused_and_survives_bad_input_even_with_overwrite(tmp_path, tiny_teacher_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert "--overwrite" in assert_cli_error(["distill", "--out", str(out)], capsys)
    # --overwrite clears the folder only once config, teacher and prompts have been checked
    assert_cli_error(["distill", "--out", str(out), "--overwrite", f"teacher={tmp_path / 'missing'}"], capsys)
    assert_cli_error(["distill", "--out", str(out), "--overwrite", "optim.lr=-1"], capsys)
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["distill", "--out", str(out), "--overwrite", "--no-progress", f"teacher={tiny_teacher_dir}", *FAST]) == 0
    assert not (out / "precious.txt").exists() and (out / "student" / "model.yaml").is_file()


def test_sample_bad_input(tmp_path, capsys):
    assert "does not exist" in assert_cli_error(["sample", "--student", str(tmp_path / "none"), "--prompt", "x",
                                     "--out", str(tmp_path / "a.png")], capsys)


def test_teacher_train_on_npz_feeds_distill(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = (rng.random((12, 6, 6)) * 255).astype(np.uint8)
    labels = np.array(["cat", "dog"] * 6)
    np.savez(tmp_path / "toy.npz", images=images, labels=labels)
    teacher = tmp_path / "teacher"
    rc = main(["teacher", "train", "--out", str(teacher), "--data", str(tmp_path / "toy.npz"), "--no-progress",
               "steps=3", "batch_size=4", "image_size=4", "model.hidden=16", "model.depth=1", "model.heads=2",
               "model.text_dim=16", "sample_steps=2", "prompt_template=a toy {label}"])
    assert rc == 0
    assert (teacher / "samples.png").is_file() and (teacher / "train_config.yaml").is_file()
    assert (teacher / "network.safetensors").stat().st_size < 10_000_000
    prompts = tmp_path / "p.txt"
    prompts.write_text("a toy cat\na toy dog\n")
    rc = main(["distill", "--out", str(tmp_path / "run"), "--no-progress", f"teacher={teacher}",
               f"prompts={prompts}", "steps=1", "prompts_per_step=2", "pairs.route_points=3", "preview.seeds=1",
               "preview.teacher_steps=2"])
    assert rc == 0
    assert "[4.0, 4.5, 5.0] around 4.5, from the teacher's model.yaml" in capsys.readouterr().err  # its sample_cfg_scale
    err = assert_cli_error(["distill", "--out", str(tmp_path / "run2"), f"teacher={teacher}", f"prompts={prompts}",
                "preview.prompts=[a toy bird]"], capsys)
    assert "'bird'" in err


def test_console_script_reports_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tbcm.cli", "distill", "--out", str(tmp_path / "r"), "steps=0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_overrides_may_follow_flags_and_cuda_without_cuda_is_one_line(tmp_path, tiny_teacher_dir, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--out", str(out), f"teacher={tiny_teacher_dir}", "steps=1", "--no-progress",
            "threads=1", "prompts_per_step=1", "pairs.route_points=3", "preview.seeds=1", "preview.teacher_steps=2",
            "preview.student_steps=[1]"]
    assert main(argv) == 0  # key=value after a flag is an override, not "unrecognized arguments"
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["threads"] == 1 and saved["steps"] == 1 and saved["preview"]["seeds"] == 1
    assert saved["cfg_scales"] == [4.0, 4.5, 5.0] and saved["sampler"]["cfg_scale"] == 4.5  # no guidance named
    capsys.readouterr()  # that run's account of its guidance; what follows is one refused run
    if not torch.cuda.is_available():
        err = assert_cli_error(["distill", "--out", str(tmp_path / "gpu"), f"teacher={tiny_teacher_dir}",
                                "device=cuda"], capsys)
        assert "device=cuda" in err and "device=auto" in err
