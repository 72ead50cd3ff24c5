"""The embedded default teacher (shipped weights) and the teacher's training data loaders."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from tbcm.data import load_training_data, read_prompts_file
from tbcm.errors import UserError
from tbcm.models.bundle import builtin_prompts_path, builtin_teacher_path, load_bundle
from tbcm.models.teacher import Teacher
from tbcm.previews import teacher_samples


def test_builtin_teacher_is_small_and_its_guided_samples_are_the_requested_digits():
    folder = builtin_teacher_path()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 10 * 1024 * 1024
    teacher = Teacher.from_bundle(load_bundle("builtin", expect_kind="teacher"))
    prompts = read_prompts_file(builtin_prompts_path())
    assert prompts == [f"a handwritten digit {d}" for d in range(10)]
    pixels = teacher_samples(teacher, prompts, cfg_scale=4.5, steps=16, seeds=10)  # [100, 1, 8, 8] in [-1, 1]
    digits = load_digits()
    clf = SVC(gamma=0.25).fit(digits.data / 16.0, digits.target)  # 97% cross-validated on real digits
    predicted = clf.predict(((pixels[:, 0] + 1) / 2).reshape(100, 64).numpy())
    requested = np.repeat(np.arange(10), 10)
    accuracy = float((predicted == requested).mean())
    assert accuracy >= 0.9, accuracy


def test_npz_with_labels_or_prompts_and_shape_layouts(tmp_path):
    imgs = np.random.default_rng(0).random((4, 3, 10, 10)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=imgs, prompts=np.array(["red", "green", "blue", "red"]))
    d = load_training_data(str(tmp_path / "a.npz"), 8, "{label}")
    assert d.images.shape == (4, 3, 8, 8) and d.prompts == ["red", "green", "blue", "red"]
    assert d.images.min() >= -1 and d.images.max() <= 1
    np.savez(tmp_path / "b.npz", images=(imgs.transpose(0, 2, 3, 1) * 255).astype(np.uint8), labels=np.arange(4))
    d = load_training_data(str(tmp_path / "b.npz"), 10, "digit {label}")
    assert d.images.shape == (4, 3, 10, 10) and d.prompts[3] == "digit 3"
    np.savez(tmp_path / "c.npz", images=imgs)
    with pytest.raises(UserError, match="neither 'labels' nor 'prompts'"):
        load_training_data(str(tmp_path / "c.npz"), 8, "{label}")


def test_image_folders(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "classes" / label).mkdir(parents=True)
        Image.fromarray(np.full((12, 12), 200, np.uint8)).save(tmp_path / "classes" / label / "1.png")
    d = load_training_data(str(tmp_path / "classes"), 8, "a {label}")
    assert d.images.shape == (2, 1, 8, 8) and d.prompts == ["a cat", "a dog"]
    assert torch.allclose(d.images, torch.full_like(d.images, 200 / 255 * 2 - 1), atol=1e-3)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "x.png")
    with pytest.raises(UserError, match="has no prompt"):
        load_training_data(str(flat), 8, "{label}")
    (flat / "prompts.txt").write_text("x.png\ta black square\n")
    assert load_training_data(str(flat), 8, "{label}").prompts == ["a black square"]
    with pytest.raises(UserError, match="not found"):
        load_training_data(str(tmp_path / "missing"), 8, "{label}")
