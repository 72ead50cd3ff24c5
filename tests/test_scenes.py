"""The scenes miniature: the generator's determinism and labels (checked on pixels), the split,
the shipped judge, and `tbcm eval` on a scenes student."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tbcm.cli import main
from tbcm.errors import UserError
from tbcm.models.bundle import Bundle, ModelMeta, save_bundle
from tbcm.models.builtin.dit import DiTConfig, TinyDiT
from tbcm.models.student import LogvarHead
from tbcm.models.builtin.text import PromptEncoder
from tbcm.scenes.generator import (
    BACKGROUND,
    COLOURS,
    Labels,
    Obj,
    Scene,
    all_scenes,
    heldout_pairs,
    parse_prompt,
    render,
    render_many,
    sample_scenes,
    split,
    to_flow,
)
from tbcm.scenes.judge import attribute_scores, exact_accuracy, label_ids, load_judge, real_batch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def _colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """Pixels within 40 of the named colour (anti-aliased edges fall outside)."""
    return np.abs(image.astype(int) - np.array(COLOURS[colour])).max(-1) < 40


def test_render_is_deterministic_and_seed_dependent():
    scenes = sample_scenes(50, 3, all_scenes())
    assert scenes == sample_scenes(50, 3, all_scenes())
    a, b = render_many(scenes, 9), render_many(scenes, 9)
    assert a.dtype == np.uint8 and a.shape == (50, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, render_many(scenes, 10))
    x = to_flow(a)
    assert x.shape == (50, 3, 32, 32) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_pixels_of_the_named_colours_are_at_the_named_places(relation):
    rng = np.random.default_rng(0)
    scene = Scene(Obj("red", "circle"), relation, Obj("blue", "square"))
    for _ in range(20):
        image = render(scene, rng)
        red, blue = _colour_mask(image, "red"), _colour_mask(image, "blue")
        assert red.sum() > 20 and blue.sum() > 20
        (ry, rx), (by, bx) = np.argwhere(red).mean(0), np.argwhere(blue).mean(0)
        along = {"left of": bx - rx, "right of": rx - bx, "above": by - ry, "below": ry - by}[relation]
        across = abs(by - ry) if relation in ("left of", "right of") else abs(bx - rx)
        assert along > 6 and along > 1.5 * across, (relation, along, across)
        # nothing but the two colours and the background (and edges between them)
        other = ~(red | blue | (np.abs(image.astype(int) - BACKGROUND).max(-1) < 40))
        assert other.sum() < 0.5 * (red.sum() + blue.sum())


def test_shapes_fill_their_boxes_as_a_circle_square_and_triangle_do():
    rng = np.random.default_rng(1)
    fills = {}
    for shape in ("circle", "square", "triangle"):
        image = render(Scene(Obj("green", shape)), rng)
        mask = _colour_mask(image, "green")
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills[shape] = mask.sum() / box
    assert fills["square"] > 0.85 and 0.6 < fills["circle"] < 0.85 and fills["triangle"] < 0.6, fills


def test_labels_are_canonical_and_prompts_parse_back():
    a, b = Obj("red", "circle"), Obj("blue", "square")
    assert Scene(a, "left of", b).labels() == Scene(b, "right of", a).labels() == Labels(2, "horizontal", a, b)
    assert Scene(a, "below", b).labels() == Labels(2, "vertical", b, a)
    for scene in all_scenes():
        assert parse_prompt(scene.prompt()) == scene
        assert Labels.from_ids(scene.labels().as_ids()) == scene.labels()
    assert len(all_scenes()) == 12 + 12 * 11 * 4
    with pytest.raises(ValueError, match="not a scenes prompt"):
        parse_prompt("a purple circle")


def test_heldout_split_keeps_whole_object_pairs_out():
    train, held = split()
    held_pairs = heldout_pairs()
    assert len(held_pairs) == round(0.2 * 66) and len(held) == len(held_pairs) * 2 * 4
    train_pairs = {frozenset((s.first, s.second)) for s in train if s.second is not None}
    assert not train_pairs & held_pairs
    assert {s.first for s in train} == {s.first for s in all_scenes()}  # every object still seen
    assert split() == (train, held)  # fixed


def test_shipped_judge_reads_fresh_real_scenes():
    judge = load_judge()
    stated = judge.meta["accuracy"]["exact"]
    assert stated >= 0.98, stated
    x, y = real_batch(512, 4242)  # render seed never used in training
    assert exact_accuracy(judge, x, y) >= stated - 0.02
    _, held = split()
    xh, yh = real_batch(256, 4343, held)
    assert exact_accuracy(judge, xh, yh) >= stated - 0.03
    assert judge.features(x[:3]).shape == (3, 64)


def test_attribute_scores_count_what_is_wrong():
    a, b, c = Obj("red", "circle"), Obj("blue", "square"), Obj("blue", "circle")
    target = label_ids([Scene(a, "left of", b).labels()] * 4)
    pred = label_ids([Scene(a, "left of", b).labels(),  # right
                      Scene(b, "left of", a).labels(),  # swapped: binding right, position wrong
                      Scene(a, "left of", c).labels(),  # a wrong shape: shapes and binding wrong
                      Scene(a).labels()])  # one object
    s = attribute_scores(pred, target)
    assert s["all"] == 0.25 and s["position"] == 0.25 and s["binding"] == 0.5 and s["count"] == 0.75
    assert s["colours"] == 0.75 and s["shapes"] == 0.5


def _scenes_student(path):
    vocab = sorted({w for s in all_scenes() for w in s.prompt().split()})
    enc = PromptEncoder(vocab, dim=16, max_words=8)
    torch.manual_seed(0)
    net = TinyDiT(DiTConfig(in_channels=3, image_size=32, patch_size=8, hidden=32, depth=1, heads=2,
                            text_dim=16, guidance_embed=True))
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=3, image_size=32, network=net.config.to_dict(),
                     prompt_encoder=enc.config(), extra={"default_cfg_scale": 2.0, "shift": 2.5})
    return save_bundle(Bundle(meta, net, enc, LogvarHead()), path)


def test_eval_recognises_a_scenes_student(tmp_path, capsys):
    student = _scenes_student(tmp_path / "student")
    assert main(["eval", str(student), "--steps", "1", "--n", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "scenes" and result["n_per_class"] == 2
    scores = result["student"]["1"]
    for split_name in ("seen", "heldout"):
        s = scores[split_name]
        assert s["fid"] > 0 and 0 <= s["all"] <= s["binding"] <= 1 and 0 <= s["position"] <= 1
    assert scores["fid"] == scores["seen"]["fid"] and scores["adherence"] == scores["seen"]["all"]
    assert scores["seen"]["all"] < 0.5  # an untrained network does not draw the scenes
    assert main(["eval", str(student), "--steps", "1", "--n", "2"]) == 0
    table = capsys.readouterr().out
    assert "heldout" in table and "held-out" in table


def test_teacher_train_on_scenes_takes_only_the_training_split(tmp_path, capsys):
    from tbcm.data import load_training_data

    data = load_training_data("scenes", 32, "{label}", generated_images=300, seed=5)
    assert data.images.shape == (300, 3, 32, 32)
    _, held = split()
    assert not {s.prompt() for s in held} & set(data.prompts)
    with pytest.raises(UserError, match="image_size: 32"):
        load_training_data("scenes", 16, "{label}", generated_images=10)
    out = tmp_path / "teacher"
    assert main(["teacher", "train", "--out", str(out), "--config", str(CONFIGS / "teacher_scenes.yaml"),
                 "--no-progress", "steps=2", "generated_images=64", "model.depth=1", "sample_steps=2"]) == 0
    meta = yaml.safe_load((out / "model.yaml").read_text())
    assert meta["channels"] == 3 and meta["image_size"] == 32 and meta["extra"]["trained_on"] == "scenes"


def test_the_scenes_config_distils_the_shipped_teacher_and_eval_reports_both_splits(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["distill", "--out", str(run), "--config", str(CONFIGS / "distill_scenes.yaml"), "--no-progress",
                 "steps=1", "prompts_per_step=1", "pairs.pool_prompts=0", "pairs.route_points=3", "threads=1",
                 "preview.seeds=1", "preview.teacher_steps=2", "preview.student_steps=[1]"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--steps", "1", "--n", "1", "--teacher", "2", "--teacher-cfg", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["suite"] == "scenes" and result["teacher_model"] == "builtin:scenes"
    for scores in (result["teacher"]["2"], result["student"]["1"]):
        assert set(scores) >= {"fid", "adherence", "seen", "heldout"}
    assert result["student_cfgs"] == [1.5, 2.0, 2.5]  # the config's training range


def test_judge_train_cli_writes_a_loadable_judge_and_refuses_bad_steps(tmp_path, capsys):
    out = tmp_path / "judge"
    assert main(["scenes", "judge-train", "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    judge = load_judge(out)
    assert judge.meta["training"]["steps"] == 2 and 0 <= judge.meta["accuracy"]["exact"] <= 1
    assert "exact accuracy" in capsys.readouterr().out
    assert main(["scenes", "judge-train", "--out", str(tmp_path / "bad"), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    with pytest.raises(UserError, match="not a tbcm scenes judge folder"):
        load_judge(tmp_path)
