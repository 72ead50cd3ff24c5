"""`tbcm judge train`: a judge for any teacher trained on labelled images, found by that teacher's
students. Checked against what FID and a classifier must do on known sets: the reference against
itself is 0, real images of the same distribution sit far closer than noise, adherence reads the
requested labels of real images and not of mislabelled ones."""

import json

import numpy as np
import pytest
import torch

from tbcm.cli import main
from tbcm.evaluation.digits import _suite_class
from tbcm.evaluation.labelled import LabelledSuite, load_judge_classifier
from tbcm.models.bundle import load_bundle

from .conftest import assert_cli_error

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 220)}


def shapes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 8, 8, 3]`` uint8: a coloured 4x4 square at a random place on a grey background, the
    colour is the label, plus pixel noise."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    labels = np.array([names[i % 3] for i in range(count)])
    images = np.full((count, 8, 8, 3), 128, dtype=np.float64)
    for k, name in enumerate(labels):
        y, x = rng.integers(0, 5, 2)
        images[k, y:y + 4, x:x + 4] = COLOURS[name]
    images += rng.normal(0, 8, images.shape)
    return images.clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def judge_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    for name, (count, seed) in {"train": (300, 1), "judge": (600, 2), "reference": (300, 3)}.items():
        images, labels = shapes(count, seed)
        np.savez(root / f"{name}.npz", images=images, labels=labels)
    return root


@pytest.fixture(scope="module")
def judge_dir(judge_data):
    out = judge_data / "judge"
    assert main(["judge", "train", "--data", str(judge_data / "judge.npz"), "--reference",
                 str(judge_data / "reference.npz"), "--floor", str(judge_data / "train.npz"), "--out", str(out),
                 "--prompt-template", "a {label} square", "--steps", "150", "--no-progress"]) == 0
    return out


def test_the_judge_reads_its_labels_and_fid_behaves_on_known_sets(judge_data, judge_dir):
    meta = load_judge_classifier(judge_dir).meta
    assert meta["prompts"] == ["a blue square", "a green square", "a red square"] and meta["shape"] == [3, 8, 8]
    assert meta["reference_accuracy"] > 0.95
    suite = LabelledSuite.for_judge(judge_dir)()
    assert suite.matches(3, 8) and not suite.matches(1, 8)
    ref = suite.reference  # [300, 3, 8, 8], 100 per colour, in the npz's order: sort by prompt for score()
    order = torch.tensor(np.argsort(np.load(judge_data / "reference.npz")["labels"], kind="stable"))
    same = suite.score(ref[order], 100)
    assert same["fid"] < 1e-3 and same["adherence"] > 0.95
    wrong = suite.score(ref[order].roll(100, 0), 100)  # every image under another colour's prompt
    assert wrong["adherence"] < 0.05
    floor = suite.data_floor(50)
    assert floor["images"] == 150 and floor["per_prompt"] == 50
    noise = torch.rand(150, 3, 8, 8) * 2 - 1
    assert floor["fid"] < 0.2 * suite.fid_against(ref, noise)


def test_judge_train_refuses_bad_input_and_leaves_nothing(judge_data, tmp_path, capsys):
    out = tmp_path / "j"
    base = ["judge", "train", "--data", str(judge_data / "judge.npz"), "--reference", str(judge_data / "reference.npz"),
            "--out", str(out), "--no-progress"]
    assert "{label}" in assert_cli_error([*base, "--prompt-template", "a square"], capsys)
    assert "--steps" in assert_cli_error([*base, "--steps", "0"], capsys)
    images, labels = shapes(30, 4)
    np.savez(tmp_path / "two.npz", images=images[labels != "blue"], labels=labels[labels != "blue"])
    err = assert_cli_error(["judge", "train", "--data", str(tmp_path / "two.npz"), "--reference",
                            str(judge_data / "reference.npz"), "--out", str(out), "--no-progress"], capsys)
    assert "labels the judge data lacks" in err
    assert "not found" in assert_cli_error([*base[:3], str(tmp_path / "none.npz"), *base[4:]], capsys)
    assert not out.exists()


def test_a_student_of_a_judged_teacher_is_scored_by_its_judge(judge_data, judge_dir, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["teacher", "train", "--out", str(teacher), "--data", str(judge_data / "train.npz"), "--no-progress",
                 "steps=3", "batch_size=8", "image_size=8", "model.hidden=16", "model.depth=1", "model.heads=2",
                 "model.text_dim=16", "sample_steps=2", "prompt_template=a {label} square"]) == 0
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na green square\na blue square\n")
    run = tmp_path / "run"
    argv = ["distill", "--out", str(run), "--no-progress", f"teacher={teacher}", f"prompts={prompts}", "steps=1",
            "prompts_per_step=2", "pairs.route_points=3", "preview.seeds=1", "preview.teacher_steps=2",
            "sampler.tune=false"]
    assert main(argv) == 0
    student = load_bundle(run / "student", expect_kind="student", text_cache=None)
    assert _suite_class(student, "student", required=False) is None  # no judge in the teacher's folder yet
    import shutil

    shutil.copytree(judge_dir, teacher / "judge")
    assert _suite_class(student, "student").judge_dir == teacher / "judge"
    capsys.readouterr()
    assert main(["eval", str(run), "--steps", "1", "--n", "4", "--teacher", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "labelled" and result["reference"]["reference_images"] == 300
    assert 0 <= result["student"]["1"]["adherence"] <= 1 and result["teacher"]["2"]["fid"] > 0
    assert main(["eval", str(run), "--steps", "1", "--n", "4"]) == 0  # the table names the judge
    assert str(teacher / "judge") in capsys.readouterr().out
