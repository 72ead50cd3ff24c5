"""Offline evaluation: the shipped digit classifier, FID on its features, adherence, ``tbcm eval``."""

import json

import pytest
import torch
import yaml

from tbcm.cli import main
from tbcm.errors import UserError
from tbcm.evaluation import (
    accuracy,
    adherence,
    builtin_classifier_path,
    digits_split,
    fid,
    load_classifier,
)
from tbcm.evaluation.classifier import _split
from tbcm.models.bundle import Bundle, ModelMeta, save_bundle
from tbcm.models.student import LogvarHead
from tbcm.models.builtin.text import PromptEncoder

from .conftest import assert_cli_error, assert_close_to_scale, tiny_encoder, tiny_network


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py's


@pytest.fixture(scope="module")
def split():
    return digits_split()


def _student_dir(path, encoder=None):
    net, enc = tiny_network(guidance=True, seed=1), encoder or tiny_encoder()
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config(), extra={"default_cfg_scale": 4.5, "shift": 2.5})
    return save_bundle(Bundle(meta, net, enc, LogvarHead()), path)


def test_split_and_shipped_classifier(split):
    assert split.train_images.shape == (1197, 1, 8, 8) and split.heldout_images.shape == (600, 1, 8, 8)
    assert torch.equal(split.heldout_labels.bincount(), torch.full((10,), 60))
    assert split.heldout_images.min() >= -1 and split.heldout_images.max() <= 1
    _split.cache_clear()  # recomputed, not the cached object: the split is fixed by its seed
    assert torch.equal(digits_split().heldout_images, split.heldout_images)
    assert sum(f.stat().st_size for f in builtin_classifier_path().iterdir()) < 512 * 1024
    clf = load_classifier()
    acc = accuracy(clf, split.heldout_images, split.heldout_labels)
    assert acc >= 0.97, acc
    assert acc == pytest.approx(clf.meta["heldout_accuracy"], abs=1e-5)
    assert clf.meta["split"]["seed"] == 0
    x = split.heldout_images[:5]
    assert clf.features(x).shape == (5, 64) and clf(x).shape == (5, 10)
    # no batch statistics: an image's features do not depend on the rest of the batch
    assert_close_to_scale(clf.features(x[:1]), clf.features(x)[:1])


def test_fid_separates_real_from_noisy_and_noise(split):
    held, train = split.heldout_images, split.train_images
    gen = torch.Generator().manual_seed(0)
    uniform = torch.rand(held.shape, generator=gen) * 2 - 1
    noise_scale = fid(held, uniform)
    assert noise_scale > 100
    assert abs(fid(held, held)) < 1e-3 * noise_scale
    real_vs_real = fid(train, held)
    assert 0 < real_vs_real * 10 < noise_scale
    assert fid(held, train) == pytest.approx(real_vs_real, rel=1e-6)  # symmetric
    eps = torch.randn(held.shape, generator=gen)
    noisy = [fid(held, held + std * eps) for std in (0.1, 0.3, 0.6)]
    assert 0 < noisy[0] < noisy[1] < noisy[2], noisy


def test_adherence_true_and_shuffled_labels(split):
    held, labels = split.heldout_images, split.heldout_labels
    assert adherence(held, labels) >= 0.97
    shuffled = labels[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    assert adherence(held, shuffled) == pytest.approx(0.1, abs=0.05)


def test_eval_json_is_reproducible_and_finds_the_run_teacher(tmp_path, tiny_teacher_dir, capsys):
    run = tmp_path / "run"
    _student_dir(run / "student")
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(tiny_teacher_dir)}))
    argv = ["eval", str(run), "--steps", "1,2", "--n", "2", "--teacher", "2", "--seed", "3", "--json"]
    outputs = []
    for _ in range(2):
        assert main(argv) == 0
        out = capsys.readouterr().out.strip()
        assert "\n" not in out
        outputs.append(json.loads(out))
    first, second = outputs
    assert first == second
    assert set(first["student"]) == {"1", "2"} and set(first["teacher"]) == {"2"}
    for scores in [*first["student"].values(), *first["teacher"].values()]:
        assert set(scores) == {"fid", "adherence"} and scores["fid"] >= 0 and 0 <= scores["adherence"] <= 1
    assert first["n_per_class"] == 2 and first["cfg_scale"] == 4.5 and first["seed"] == 3
    assert first["teacher_model"] == str(tiny_teacher_dir)
    # another seed, other images
    assert main([*argv[:-3], "--seed", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["student"] != first["student"]


def test_eval_sweeps_report_each_models_best_guidance_and_the_ratio(tmp_path, tiny_teacher_dir, capsys):
    run = tmp_path / "run"
    student = _student_dir(run / "student")
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(tiny_teacher_dir)}))
    meta = yaml.safe_load((student / "model.yaml").read_text())
    meta["extra"]["cfg_scales"] = [1.0, 2.0]  # what save_student records: the training guidance set
    (student / "model.yaml").write_text(yaml.safe_dump(meta))
    argv = ["eval", str(run), "--steps", "1", "--n", "2", "--teacher", "2", "--teacher-cfg", "1,4.5", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["teacher_sweep"]["2"]) == {"1.0", "4.5"} and set(r["student_sweep"]["1"]) == {"1.0", "2.0"}
    # the best is the sweep's minimum, and the ratio is computed from the two bests
    tb = r["teacher_best"]
    assert tb["steps"] == 2 and tb["fid"] == min(s["fid"] for s in r["teacher_sweep"]["2"].values())
    assert r["teacher_sweep"]["2"][str(tb["cfg"])]["fid"] == tb["fid"]
    sb = r["student_best"]["1"]
    assert sb["fid"] == min(s["fid"] for s in r["student_sweep"]["1"].values())
    assert r["ratio"]["1"] == pytest.approx(sb["fid"] / tb["fid"])
    # the same-guidance numbers stay, and agree with the sweep where the guidance coincides
    assert r["teacher"]["2"] == r["teacher_sweep"]["2"]["4.5"]
    assert main([*argv[:-1]]) == 0
    assert "teacher's best FID" in capsys.readouterr().out
    assert "--teacher-cfg" in assert_cli_error([*argv[:-3], "--teacher-cfg", "1,x"], capsys)


def test_eval_teacher_follows_the_students_guidance_interval_unless_told(tmp_path, tiny_teacher_dir, capsys):
    run = tmp_path / "run"
    student = _student_dir(run / "student")
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(tiny_teacher_dir)}))
    argv = ["eval", str(run), "--steps", "1", "--n", "2", "--teacher", "2", "--cfg", "4", "--json"]

    def scores(*extra):
        assert main([*argv, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    plain = scores()
    assert plain["teacher_interval"] == []
    meta = yaml.safe_load((student / "model.yaml").read_text())
    meta["extra"]["guidance_interval"] = [0.0, 0.5]  # what save_student records
    (student / "model.yaml").write_text(yaml.safe_dump(meta))
    saved, explicit, none = scores(), scores("--teacher-interval", "0,0.5"), scores("--teacher-interval", "none")
    assert saved["teacher_interval"] == explicit["teacher_interval"] == [0.0, 0.5] and none["teacher_interval"] == []
    assert saved["teacher"] == explicit["teacher"] and none["teacher"] == plain["teacher"]
    assert saved["teacher"] != plain["teacher"]  # guided only below 0.5 rad: other teacher samples
    assert saved["student"] == plain["student"]  # the student is not touched
    assert "--teacher-interval" in assert_cli_error([*argv, "--teacher-interval", "0.5"], capsys)
    assert "--teacher-interval" in assert_cli_error([*argv, "--teacher-interval", "0.5,0.2"], capsys)


def test_eval_shift_moves_only_the_multi_step_samples_and_is_recorded(tmp_path, capsys):
    student = _student_dir(tmp_path / "student")  # saved with shift 2.5
    argv = ["eval", str(student), "--steps", "1,2", "--n", "3", "--json"]

    def run(*extra):
        assert main([*argv, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    saved, explicit, other = run(), run("--shift", "2.5"), run("--shift", "1")
    assert saved["student_shift"] == explicit["student_shift"] == 2.5 and other["student_shift"] == 1.0
    assert saved["student"] == explicit["student"]
    assert other["student"]["1"] == saved["student"]["1"]  # 1 step is [pi/2, 0] on every route
    assert other["student"]["2"] != saved["student"]["2"]  # the middle angle moved: 1.19 -> pi/4 rad
    assert "--shift" in assert_cli_error([*argv, "--shift", "0"], capsys)
    # a student saved before teacher_shift existed: --shift moves the student's route, not the teacher's
    with_teacher = [*argv, "--teacher", "2"]
    assert main(with_teacher) == 0
    base = json.loads(capsys.readouterr().out)
    assert main([*with_teacher, "--shift", "1"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["teacher"] == base["teacher"] and moved["student"]["2"] != base["student"]["2"]


def test_eval_table_on_a_student_folder_with_the_builtin_teacher(tmp_path, capsys):
    student = _student_dir(tmp_path / "student")
    assert main(["eval", str(student), "--steps", "1", "--n", "1", "--teacher", "2", "--cfg", "3"]) == 0
    out = capsys.readouterr().out
    assert "student" in out and "teacher" in out and "cfg 3.0" in out


def test_eval_bad_input_exits_2_with_one_line(tmp_path, capsys):
    student = _student_dir(tmp_path / "student")
    assert "does not exist" in assert_cli_error(["eval", str(tmp_path / "missing")], capsys)
    assert "--steps" in assert_cli_error(["eval", str(student), "--steps", "0"], capsys)
    assert "--steps" in assert_cli_error(["eval", str(student), "--steps", "1,two"], capsys)
    assert "--teacher" in assert_cli_error(["eval", str(student), "--teacher", "0"], capsys)
    assert "--n" in assert_cli_error(["eval", str(student), "--n", "0"], capsys)
    (tmp_path / "empty").mkdir()
    assert "neither" in assert_cli_error(["eval", str(tmp_path / "empty")], capsys)
    other = _student_dir(tmp_path / "cats", PromptEncoder(["a", "photo", "of", "cat"], dim=16, heads=2))
    assert "'handwritten'" in assert_cli_error(["eval", str(other)], capsys)


def test_classifier_train_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "clf"
    assert main(["classifier", "train", "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    clf = load_classifier(out)
    assert clf.meta["split"] == {"seed": 0, "train": 1197, "heldout": 600}
    assert clf.meta["training"]["steps"] == 3 and 0 <= clf.meta["heldout_accuracy"] <= 1
    assert "--overwrite" in assert_cli_error(["classifier", "train", "--out", str(out), "--steps", "3"], capsys)
    with pytest.raises(UserError, match="not a tbcm classifier"):
        load_classifier(tmp_path)


def test_eval_draws_every_image_from_its_own_seed_as_tbcm_sample_does(tmp_path):
    # image j of prompt i is seed i n + j (its initial noise and its re-noising), whatever the
    # batch split: the same images `tbcm sample --seed` gives, and no seed shared across prompts
    # (independent samples, as FID assumes)
    from tbcm.evaluation.draws import Encodings, ImageDraw, sample_draw, student_fn
    from tbcm.generate import load_image_generator, to_uint8_rgb
    from tbcm.models.bundle import load_bundle
    from tbcm.models.student import Student
    from tbcm.sampler import StudentSampler
    from tbcm.sampling import to_pixels

    folder = _student_dir(tmp_path / "student")
    bundle = load_bundle(folder, expect_kind="student")
    student = Student.from_bundle(bundle).eval()
    sampler = StudentSampler.from_extra(bundle.meta.extra).overridden(cfg_scale=2.0)
    prompts, n = ["a handwritten digit 3", "a handwritten digit 7"], 3

    def draw(ps, first, steps=2, batch=128):
        return sample_draw(ImageDraw(tuple(ps), n, first), student_fn(student, sampler, steps),
                           Encodings(ps, bundle.encoder), (1, 8, 8), batch=batch)

    with torch.no_grad():
        together = draw(prompts, 10)
        apart = torch.cat([draw([p], 10 + i * n) for i, p in enumerate(prompts)])
        in_pairs = draw(prompts, 10, batch=2)
        gen = load_image_generator(folder, steps=2, cfg_scale=2.0, shift=2.5)
        sampled = gen.generate([p for p in prompts for _ in range(n)], list(range(10, 10 + 2 * n)))
        twice = draw(prompts[:1] * 2, 10, steps=1)
    # equal up to the float rounding of another batch size (a different seed would differ by ~1)
    assert (together - apart).abs().max() < 1e-4 and (together - in_pairs).abs().max() < 1e-4
    assert (sampled.int() - to_uint8_rgb(to_pixels(together, 0.5)).int()).abs().max() <= 1
    # the same prompt twice, 1 step: its j-th images differ (one seed per column would repeat them)
    assert (twice[0] - twice[n]).abs().max() > 1e-3


# -- the teacher as copied, the teacher at its best, the data floor, tune/confirm draws -------------

def _sampler_run(tmp_path, teacher_dir, **sampler):
    """A run whose student saved a sampler (what the trainer saves): guidance input 2, trained on
    1 and 2, its teacher guided in (0, 0.5], rollouts on 4 points of the reference route."""
    from tbcm.sampler import StudentSampler

    settings = {"cfg_scale": 2.0, "cfg_scales": [1.0, 2.0], "guidance_interval": [0.0, 0.5],
                "teacher_route_points": 4, **sampler}
    run = tmp_path / "run"
    student = _student_dir(run / "student")
    meta = yaml.safe_load((student / "model.yaml").read_text())
    meta["extra"] = {"sampler": StudentSampler(**settings).to_dict()}
    (student / "model.yaml").write_text(yaml.safe_dump(meta))
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(teacher_dir)}))
    return run


def test_eval_teacher_as_copied_is_the_rollout_on_the_students_training_route(tmp_path, tiny_teacher_dir, capsys):
    from tbcm.evaluation.evaluate import PROMPTS, DigitsSuite
    from tbcm.models.bundle import load_bundle
    from tbcm.models.teacher import Teacher
    from tbcm.sampling import rollout, to_pixels
    from tbcm.trigflow import official_reference_route

    run = _sampler_run(tmp_path, tiny_teacher_dir)
    assert main(["eval", str(run), "--steps", "1", "--n", "2", "--teacher-copied", "--seed", "7", "--json",
                 "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["teacher_as_copied"]
    route = official_reference_route(4, 2.5)
    assert (c["steps"], c["shift"], c["cfg"], c["guidance_interval"]) == (4, 2.5, 2.0, [0.0, 0.5])
    assert c["angles"] == pytest.approx(route.tolist()) and c["angles"][-1] < 0.01  # down to 0.0063 rad
    assert set(c["sweep"]) == {"2.0", "1.0"} and c["sweep"]["2.0"]["fid"] == c["fid"]
    assert r["ratio_vs_copied"]["1"] == pytest.approx(r["student"]["1"]["fid"] / c["fid"])
    assert r["sampler"]["teacher_route_points"] == 4 and r["cfg_scale"] == 2.0
    # by hand: image k seeded 7 + k, the rollout through the route then to 0, guided only in (0, 0.5]
    teacher = Teacher.from_bundle(load_bundle(tiny_teacher_dir, expect_kind="teacher"))
    teacher.guidance_interval = (0.0, 0.5)
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(7 + k)) for k in range(20)])
    cond = teacher.encoder.encode([p for p in PROMPTS for _ in range(2)])
    with torch.no_grad():
        x0 = rollout(lambda x, t: teacher.velocity(x, t, cond, torch.full((20,), 2.0)), 0.5 * noise,
                     route.float().expand(20, -1)).final
    assert c["fid"] == pytest.approx(DigitsSuite().score(to_pixels(x0, 0.5), 2)["fid"], rel=1e-4)


def test_eval_teacher_at_best_is_chosen_on_a_tune_draw_and_scored_on_the_reported_one(tmp_path, tiny_teacher_dir,
                                                                                      capsys):
    from tbcm.evaluation.splits import draw_seed

    run = _sampler_run(tmp_path, tiny_teacher_dir)
    argv = ["eval", str(run), "--steps", "1", "--n", "2", "--teacher-best", "--best-steps", "2,3", "--best-shift",
            "1,2.5", "--best-cfg", "1,2", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--split", "confirm", "--draw", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    b = r["teacher_at_best"]
    assert r["seed"] == draw_seed("confirm", 1) and (r["split"], r["draw"]) == ("confirm", 1)
    assert b["tune"] == {**b["tune"], "split": "tune", "draw": 0, "seed": draw_seed("tune", 0)}
    assert not b["selected_on_reported_images"]
    # 2 step counts x 2 shifts x (w 1 once, w 2 guided in the run's interval or everywhere), then the
    # teacher as copied (4 points, shift 2.5, w 2 in the run's interval): the best is never worse than it
    assert b["tried"][-1] == {**b["tried"][-1], "steps": 4, "shift": 2.5, "cfg": 2.0, "guidance_interval": [0.0, 0.5]}
    assert len(b["tried"]) == 13 and b["grid"] == {"steps": [2, 3], "shifts": [1.0, 2.5], "cfgs": [1.0, 2.0],
                                                   "intervals": ["run", "none"]}
    assert {tuple(t["guidance_interval"]) for t in b["tried"] if t["cfg"] == 2.0} == {(0.0, 0.5), ()}
    chosen = min(b["tried"], key=lambda t: t["fid"])
    assert {k: b[k] for k in ("steps", "shift", "cfg", "guidance_interval")} == \
        {k: chosen[k] for k in ("steps", "shift", "cfg", "guidance_interval")}
    assert b["tune"]["fid"] == chosen["fid"] and b["fid"] != chosen["fid"]  # reported on other images
    assert r["headline_ratio"] == r["ratio_vs_best"]
    assert r["ratio_vs_best"]["1"] == pytest.approx(r["student"]["1"]["fid"] / b["fid"])
    assert "teacher_as_copied" in r and "ratio_vs_copied" in r  # ratios against both
    # chosen and reported on the tune draw itself: the same numbers, and flagged
    assert main([*argv, "--split", "tune", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)["teacher_at_best"]
    assert same["selected_on_reported_images"] and same["fid"] == same["tune"]["fid"]
    assert main([*argv, "--split", "tune"]) == 0
    table = capsys.readouterr().out
    assert "chosen on these same images" in table and "the teacher at its best (headline)" in table


def test_eval_reports_the_data_floor_with_as_many_real_images(tmp_path, capsys):
    from tbcm.evaluation.evaluate import DigitsSuite

    student = _student_dir(tmp_path / "student")
    assert main(["eval", str(student), "--steps", "1", "--n", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    floor = r["data_floor"]
    assert floor["images"] == 30 and floor["per_prompt"] == 3 and 0 < floor["fid"]
    suite = DigitsSuite()
    assert floor == suite.data_floor(3)
    capped = suite.data_floor(500)  # the training split has 114 to 123 images per digit
    assert capped["per_prompt"] == 114 and capped["images"] == 1140
    assert capped["fid"] < floor["fid"]  # more images, less small-sample bias
    assert main(["eval", str(student), "--steps", "1", "--n", "3"]) == 0
    assert "data floor: FID" in capsys.readouterr().out


def test_eval_split_draws_are_seeds_and_bad_new_flags_are_one_line_errors(tmp_path, capsys):
    from tbcm.evaluation.splits import draw_seed

    student = _student_dir(tmp_path / "student")
    base = ["eval", str(student), "--steps", "1", "--n", "1", "--json"]
    assert main([*base, "--split", "confirm", "--draw", "2"]) == 0
    by_split = json.loads(capsys.readouterr().out)
    assert main([*base, "--seed", str(draw_seed("confirm", 2))]) == 0
    by_seed = json.loads(capsys.readouterr().out)
    assert by_split["student"] == by_seed["student"] and by_seed["draw_of_seed"] == {"split": "confirm", "draw": 2}
    assert "--seed" in assert_cli_error([*base, "--split", "tune", "--seed", "1"], capsys)
    assert "--split" in assert_cli_error([*base, "--draw", "1"], capsys)
    assert "--draw" in assert_cli_error([*base, "--split", "tune", "--draw", "40"], capsys)
    assert "--split 'test'" in assert_cli_error([*base, "--split", "test"], capsys)
    assert "--teacher-best" in assert_cli_error([*base, "--best-steps", "16"], capsys)
    assert "--best-interval" in assert_cli_error([*base, "--teacher-best", "--best-interval", "0.5:0.2"], capsys)
    assert "--best-steps" in assert_cli_error([*base, "--teacher-best", "--best-steps", "0"], capsys)
    assert "--inception" in assert_cli_error([*base, "--inception", str(tmp_path / "w.pth")], capsys)
    (tmp_path / "p.txt").write_text("a handwritten digit 3\n")
    assert "--prompts" in assert_cli_error([*base, "--fidelity", "--prompts", str(tmp_path / "p.txt")], capsys)
    assert "--clip" in assert_cli_error([*base, "--clip", str(tmp_path)], capsys)
    assert "--fresh-noise" in assert_cli_error([*base, "--fresh-noise", "2"], capsys)


def test_teacher_grid_settings_and_the_copied_teacher():
    import math

    from tbcm.evaluation.teachers import TeacherGrid, TeacherSetting, copied_setting, parse_interval
    from tbcm.sampler import StudentSampler

    sampler = StudentSampler(cfg_scale=3.0, cfg_scales=[1.0, 2.0, 3.0], guidance_interval=[0.0, 0.5],
                             teacher_route_points=16, teacher_route_shift=2.5)
    copied = copied_setting(sampler, 3.0)
    assert torch.equal(copied.route(), sampler.teacher_route())  # the route of the training rollouts
    assert copied.interval == (0.0, 0.5) and copied.to_dict()["guidance_interval"] == [0.0, 0.5]
    default = TeacherGrid().settings(sampler)
    # 4 step counts x 2 shifts x (w 1 once + w 2, 3 in the run's interval or everywhere); it holds the copied one
    assert len(default) == 4 * 2 * 5 and copied in default
    assert all(s.interval is None for s in default if s.cfg == 1.0)
    narrow = TeacherGrid(steps=(32,), shifts=(1.0,), cfgs=(1.0,), intervals=("none",)).settings(sampler)
    assert narrow == [TeacherSetting(32, 1.0, 1.0, None), copied]
    assert TeacherSetting(8, 1.0, 1.0, (0.0, 0.5)).canonical() == TeacherSetting(8, 1.0, 1.0, None)
    assert parse_interval("run", [0.0, 0.5]) == (0.0, 0.5) and parse_interval("run", []) is None
    assert parse_interval("none", [0.0, 0.5]) is None and parse_interval("0.1:0.9", []) == (0.1, 0.9)
    for bad in ("0.9:0.1", "x", "0:2"):
        with pytest.raises(UserError, match="--best-interval"):
            parse_interval(bad, [])
    for grid, flag in ((TeacherGrid(steps=()), "--best-steps"), (TeacherGrid(shifts=(0.0,)), "--best-shift"),
                       (TeacherGrid(cfgs=(-1.0,)), "--best-cfg"), (TeacherGrid(draw=40), "--best-draw")):
        with pytest.raises(UserError, match=flag):
            grid.check()
    assert TeacherSetting(1, 2.5, 1.0).route().tolist() == [math.pi / 2]  # one point: one step from pi/2 to 0
