"""Choosing a student's sampler by fidelity to its teacher (tbcm.sampler_tuning, `tbcm tune-sampler`)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import yaml

from tbcm.cli import main
from tbcm.evaluation.splits import draw_seed
from tbcm.sampler import StudentSampler
from tbcm.sampler_tuning import SearchSpace, score, tune_sampler

from .conftest import assert_cli_error

FAST = ["steps=2", "prompts_per_step=2", "pairs.route_points=4", "preview.seeds=1", "preview.teacher_steps=2",
        "preview.student_steps=[1]"]


def test_the_paired_measure_is_the_latent_mse_in_units_of_sigma_d():
    x = torch.zeros(4, 1, 2, 2)
    assert score(x + 0.5, x, sigma_d=0.5) == pytest.approx(1.0)
    y = torch.zeros(2, 1, 2, 2)
    y[0] = 1.0  # image 0 off by 1 everywhere, image 1 exact: the mean over images of each image's MSE
    assert score(y, torch.zeros_like(y), sigma_d=1.0) == pytest.approx(0.5)


def _fake(best_angle: float, best_share: float, share_weight: float = 1.0):
    """A student whose samples are the teacher's plus an error growing with the distance of its
    first middle angle from ``best_angle`` and of its re-noising share from ``best_share``."""
    teacher = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def student_fn(cand: StudentSampler, steps: int) -> torch.Tensor:
        calls.append((steps, cand.angles(steps)[1:-1], cand.fresh_noise))
        off = abs(cand.angles(steps)[1] - best_angle) + share_weight * abs(cand.fresh_noise - best_share)
        return teacher + off * torch.randn(teacher.shape, generator=torch.Generator().manual_seed(2))

    return teacher, student_fn, calls


def test_the_search_finds_the_route_and_share_closest_to_the_teacher():
    teacher, student_fn, calls = _fake(best_angle=math.atan(0.5), best_share=0.5)
    saved = StudentSampler(shift=2.5, fresh_noise=1.0)
    space = SearchSpace(steps=(2, 4), shifts=(0.25, 0.5, 2.5), restarts=(0.3,), fresh_noise=(0.0, 0.5, 1.0))
    result = tune_sampler(saved, student_fn, teacher, sigma_d=1.0, space=space)
    assert result.sampler.fresh_noise == 0.5
    assert result.sampler.angles(2)[1] == pytest.approx(math.atan(0.5), abs=1e-6)
    four = space.routes(4, saved.angles(4)[1:-1])
    assert result.sampler.routes[4] == min(four, key=lambda mids: abs(mids[0] - math.atan(0.5)))
    # every route at every share, each once: 2 steps 3 shifts; 4 steps 3 shifts + 1 restart
    assert len(calls) == len(result.tried) == 3 * (3 + 4)
    assert result.before == saved and result.sampler.cfg_scale == saved.cfg_scale  # guidance is not searched
    assert all(c[2] in (0.0, 0.5, 1.0) for c in calls)


def test_the_saved_sampler_is_a_candidate_so_tuning_never_does_worse_on_the_tune_draw():
    saved = StudentSampler(routes={2: [0.9], 4: [1.2, 0.9, 0.3]}, fresh_noise=0.25)
    teacher, student_fn, _ = _fake(best_angle=0.9, best_share=0.25, share_weight=4.0)
    space = SearchSpace(steps=(2, 4), shifts=(0.1, 6.0), restarts=(), fresh_noise=(0.0, 1.0), max_angle=math.pi / 2)
    result = tune_sampler(saved, student_fn, teacher, sigma_d=1.0, space=space)
    assert result.sampler.routes == saved.routes and result.sampler.fresh_noise == 0.25
    assert result.chosen["scores"] == result.chosen["before_scores"]


def test_each_candidates_spectrum_ratio_is_recorded_beside_its_paired_error():
    """The paired error favours faded samples (the conditional mean); the record shows it: a candidate
    at 0.8x the teacher reads 0.64x its power in every band, beside its low paired error."""
    teacher = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(2))

    def student_fn(cand: StudentSampler, steps: int) -> torch.Tensor:
        return 0.8 * teacher if cand.angles(steps)[1] > 1.0 else teacher + 0.4 * noise

    space = SearchSpace(steps=(2,), shifts=(0.25, 6.0), restarts=(), fresh_noise=(1.0,), max_angle=math.pi / 2)
    result = tune_sampler(StudentSampler(shift=2.5, fresh_noise=1.0), student_fn, teacher, sigma_d=1.0, space=space)
    faded = [r for r in result.tried if r["route"][0] > 1.0]
    noisy = [r for r in result.tried if r["route"][0] < 1.0]
    assert faded and all(v == pytest.approx(0.64) for r in faded for v in r["scores"]["spectrum"])
    assert noisy and all(1.05 < v < 1.3 for r in noisy for v in r["scores"]["spectrum"])
    assert result.sampler.angles(2)[1] > 1.0  # the paired error alone chooses the faded one
    assert result.chosen["spectrum"]["2"] == pytest.approx([0.64] * 4)


def test_routes_re_noising_above_the_cap_are_scored_but_never_chosen():
    """Closest to the teacher at 1.4 rad (the 2-step route of shift 6), but above the 1.0 rad cap:
    the best route within the cap is chosen; without the cap (pi/2) the closest one is."""
    teacher, student_fn, _ = _fake(best_angle=math.atan(6.0), best_share=1.0)
    saved = StudentSampler(shift=2.5, fresh_noise=1.0)
    space = SearchSpace(steps=(2,), shifts=(0.25, 0.5, 6.0), restarts=(), fresh_noise=(1.0,))
    capped = tune_sampler(saved, student_fn, teacher, sigma_d=1.0, space=space)
    assert capped.sampler.angles(2)[1] == pytest.approx(math.atan(0.5), abs=1e-6)  # the nearest within 1.0 rad
    assert {round(r["route"][0], 3) for r in capped.tried} == {0.245, 0.464, 1.406, 1.19}  # all scored, saved too
    uncapped = tune_sampler(saved, student_fn, teacher, sigma_d=1.0, space=replace(space, max_angle=math.pi / 2))
    assert uncapped.sampler.angles(2)[1] == pytest.approx(math.atan(6.0), abs=1e-6)
    # a cap below every route tried leaves the choice to the paired error among all of them
    floor = tune_sampler(saved, student_fn, teacher, sigma_d=1.0, space=replace(space, max_angle=0.01))
    assert floor.sampler.angles(2)[1] == pytest.approx(math.atan(6.0), abs=1e-6)


def test_bad_search_spaces_are_refused_with_the_fix():
    from tbcm.errors import UserError

    for space, needle in ((SearchSpace(steps=(1,)), "1 step has no route"), (SearchSpace(shifts=(0.0,)), "positive"),
                          (SearchSpace(restarts=(2.0,)), "(0, pi/2)"), (SearchSpace(fresh_noise=(1.5,)), "[0, 1]"),
                          (SearchSpace(max_angle=0.0), "(0, pi/2]"), (SearchSpace(max_angle=2.0), "(0, pi/2]")):
        with pytest.raises(UserError, match=None) as info:
            space.check()
        assert needle in str(info.value)


def test_distill_tunes_the_sampler_on_tune_noise_and_saves_it_with_the_student(tiny_teacher_dir, tmp_path, one_thread):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}", *FAST,
                 "sampler.tune_images=20", "sampler.tune_fresh_noise=[0.0,1.0]"]) == 0
    record = json.loads((out / "sampler_tuning.json").read_text())
    saved = yaml.safe_load((out / "student" / "model.yaml").read_text())["extra"]["sampler"]
    assert saved == record["after"]
    assert record["split"] == "tune" and record["seed"] == draw_seed("tune", 0)  # confirm noise never takes part
    assert record["images"] == 20 and record["space"]["fresh_noise"] == [0.0, 1.0]
    assert {t["fresh_noise"] for t in record["tried"]} == {0.0, 1.0}
    assert set(record["chosen"]["routes"]) == {"2", "4"}
    assert StudentSampler.from_extra({"sampler": saved}).angles(4)[1:-1] == pytest.approx(record["chosen"]["routes"]["4"])

    off = tmp_path / "off"
    assert main(["distill", "--out", str(off), "--no-progress", f"teacher={tiny_teacher_dir}", *FAST,
                 "sampler.tune=false"]) == 0
    assert not (off / "sampler_tuning.json").exists()
    assert yaml.safe_load((off / "student" / "model.yaml").read_text())["extra"]["sampler"]["routes"] == {}


def test_tune_sampler_command_rewrites_the_saved_sampler_and_dry_run_writes_nothing(tiny_teacher_dir, tmp_path,
                                                                                 capsys, one_thread):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--no-progress", f"teacher={tiny_teacher_dir}", *FAST,
                 "sampler.tune=false"]) == 0
    model_yaml = (out / "student" / "model.yaml").read_bytes()
    argv = ["tune-sampler", str(out), "--images", "12", "--shifts", "0.25,2.5", "--restarts", "none",
            "--fresh", "0,1", "--no-progress"]
    assert main([*argv, "--dry-run"]) == 0
    assert (out / "student" / "model.yaml").read_bytes() == model_yaml and not (out / "sampler_tuning.json").exists()
    printed = capsys.readouterr().out
    assert "2 steps: middle angles" in printed and "4 steps: middle angles" in printed
    assert main(argv) == 0
    record = json.loads((out / "sampler_tuning.json").read_text())
    saved = yaml.safe_load((out / "student" / "model.yaml").read_text())["extra"]["sampler"]
    assert saved == record["after"] and record["before"]["routes"] == {}
    # 2 shifts (+ the saved shift-2.5 route, the same) at 2 and 4 steps, at shares 0 and 1
    assert len(record["tried"]) == 2 * 2 * 2

    assert "--images must be at least 2" in assert_cli_error([*argv[:2], "--images", "1"], capsys)
    assert "--fresh" in assert_cli_error([*argv[:2], "--fresh", "0,x"], capsys)
    assert "[0, 1]" in assert_cli_error([*argv[:2], "--fresh", "2"], capsys)
    assert "--steps" in assert_cli_error([*argv[:2], "--steps", "two"], capsys)
    assert "does not exist" in assert_cli_error(["tune-sampler", str(tmp_path / "nowhere")], capsys)
    assert yaml.safe_load((out / "student" / "model.yaml").read_text())["extra"]["sampler"] == saved
