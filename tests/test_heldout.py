"""The FID reference is held out from the teachers: the shipped digits teacher trained on the train
part of the evaluation's split only, and the scenes teacher's training renders are not the fresh
scenes ``tbcm eval`` compares against."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tbcm.config import TeacherTrainConfig, load_config
from tbcm.data import digits_split_indices, load_digits, load_training_data

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "tbcm" / "assets"
TEMPLATE = "a handwritten digit {label}"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py's


@pytest.fixture(scope="module")
def digits_reference():
    """The FID reference of ``tbcm eval`` on digits: the evaluation's own suite builds it."""
    from tbcm.evaluation.evaluate import DigitsSuite

    suite = DigitsSuite()
    return suite.split_seed, suite.heldout


def _rows_list(images) -> list[bytes]:
    """Each image's pixels as bytes (exact content, for set membership)."""
    return [row.tobytes() for row in np.ascontiguousarray(images.reshape(images.shape[0], -1))]


def _rows(images) -> set[bytes]:
    return set(_rows_list(images))


def test_the_shipped_digits_teacher_never_saw_an_fid_reference_image(digits_reference):
    split_seed, reference = digits_reference
    extra = yaml.safe_load((ASSETS / "teacher" / "model.yaml").read_text())["extra"]
    trained = load_config(TeacherTrainConfig, ASSETS / "teacher" / "train_config.yaml")
    assert extra["trained_on"] == trained.data == "digits"
    split = extra["split"]
    assert split["name"] == "train" and split["seed"] == split_seed  # the split tbcm eval refers to

    train_idx, held_idx = digits_split_indices(split["seed"])
    assert not set(train_idx) & set(held_idx)
    assert len(train_idx) + len(held_idx) == split["total"] == 1797
    assert sorted(train_idx + held_idx) == list(range(1797))
    assert extra["images"] == split["images"] == len(train_idx) == 1197
    assert split["heldout"] == len(held_idx) == 600
    # those held-out indices are the evaluation's reference, image for image
    assert torch.equal(load_digits(8, TEMPLATE).images[list(held_idx)], reference)

    # configs/teacher_digits.yaml is what made it (run with threads=1: speed only, not the maths)
    assert load_config(TeacherTrainConfig, ROOT / "configs" / "teacher_digits.yaml", [f"threads={trained.threads}"]) \
        == trained


def test_digits_training_data_holds_no_reference_image(digits_reference):
    _, reference = digits_reference
    ref = _rows(reference.numpy())
    assert len(ref) == 600
    data = load_training_data("digits", 8, TEMPLATE)
    assert data.images.shape == (1197, 1, 8, 8) and len(data.prompts) == 1197
    assert not _rows(data.images.numpy()) & ref
    assert data.split == {"name": "train", "seed": 0, "images": 1197, "heldout": 600, "total": 1797}
    assert (np.bincount(data.labels) == np.bincount(load_digits(8, TEMPLATE).labels) - 60).all()  # 60 per digit out
    # the comparison does see reference images where they are: all digits, asked for by name
    everything = load_training_data("digits_all", 8, TEMPLATE)
    assert everything.images.shape[0] == 1797 and ref <= _rows(everything.images.numpy())
    assert everything.split == {"name": "all", "images": 1797}


def test_the_scenes_teacher_never_saw_an_fid_reference_render():
    """Its training scenes are drawn with its seed and rendered with seed + 1; the FID reference is
    rendered with REF_SEED (seen prompts) and REF_SEED + 1 (held-out prompts): other streams.

    Renders are quantised, so independent draws of a one-object scene can coincide pixel for pixel
    (the training set itself repeats some); the reference shares no two-object render with the
    training set and no more one-object renders than independent draws do."""
    from tbcm.scenes.evaluate import HELDOUT_PROMPTS, REF_PER_PROMPT, REF_SEED, SEEN_PROMPTS, _reference
    from tbcm.scenes.generator import parse_prompt, render_many, sample_scenes, split, to_flow

    trained = load_config(TeacherTrainConfig, ASSETS / "scenes_teacher" / "train_config.yaml")
    extra = yaml.safe_load((ASSETS / "scenes_teacher" / "model.yaml").read_text())["extra"]
    assert trained.data == extra["trained_on"] == "scenes" and extra["images"] == trained.generated_images
    assert load_config(TeacherTrainConfig, ROOT / "configs" / "teacher_scenes.yaml") == trained
    render_seed = trained.seed + 1
    assert render_seed not in (REF_SEED, REF_SEED + 1)

    # the data layer renders exactly this: scenes of the training split by seed, pixels by seed + 1
    small = load_training_data("scenes", 32, TEMPLATE, generated_images=50, seed=trained.seed)
    assert small.split["render_seed"] == render_seed and small.split["scene_seed"] == trained.seed
    assert torch.equal(small.images, to_flow(render_many(sample_scenes(50, trained.seed, split()[0]), render_seed)))

    scenes = sample_scenes(trained.generated_images, trained.seed, split()[0])
    renders = render_many(scenes, render_seed)  # uint8, the teacher's training images
    assert not {s.prompt() for s in scenes} & set(HELDOUT_PROMPTS)
    render_rows = _rows_list(renders)
    train_rows = set(render_rows)
    for which, prompts in (("seen", SEEN_PROMPTS), ("heldout", HELDOUT_PROMPTS)):
        reference = ((_reference(which).permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        assert reference.shape[0] == len(prompts) * REF_PER_PROMPT
        ref_scenes = [parse_prompt(p) for p in prompts for _ in range(REF_PER_PROMPT)]
        shared = [s for s, row in zip(ref_scenes, _rows_list(reference)) if row in train_rows]
        assert all(s.relation is None for s in shared), which  # never a two-object render
        if which == "heldout":
            assert not shared
            continue
        # independent draws: expected coincidences per one-object scene from the training set's own repeats
        expected = 0.0
        for single in {s for s in ref_scenes if s.relation is None}:
            rows = [r for s, r in zip(scenes, render_rows) if s == single]
            repeats = sum(c * (c - 1) / 2 for c in Counter(rows).values())
            pairs = len(rows) * (len(rows) - 1) / 2
            expected += REF_PER_PROMPT * len(rows) * repeats / pairs
        assert len(shared) <= expected + 3 * expected ** 0.5 + 1, (len(shared), expected)

