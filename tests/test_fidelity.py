"""Fidelity to the teacher (``tbcm eval --fidelity``), data-free: known answers on digits (a
"student" that is the teacher as copied scores zero paired error and full label agreement; a
perturbed one scores more), the scenes judge's view, and the tiny Sana / FLUX / SD3 pipelines
producing fidelity entries through the CLI."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
import yaml

from tbcm.cli import main
from tbcm.evaluation.evaluate import DigitsSuite, evaluate
from tbcm.evaluation.fidelity import judged_error, latent_error, unpaired
from tbcm.models.bundle import Bundle, ModelMeta, load_bundle, save_bundle
from tbcm.models.student import LogvarHead
from tbcm.models.teacher import Teacher
from tbcm.sampler import StudentSampler
from tbcm.sampling import rollout

from .conftest import assert_cli_error, tiny_encoder, tiny_network

pytestmark = pytest.mark.usefixtures("one_thread")
evaluate_module = importlib.import_module("tbcm.evaluation.evaluate")  # the package's `evaluate` is the function

SAMPLER = StudentSampler(cfg_scale=2.0, cfg_scales=[1.0, 2.0], guidance_interval=[0.0, 0.5], teacher_route_points=4)


def _digits_run(tmp_path, teacher_dir, sampler=SAMPLER):
    net, enc = tiny_network(guidance=True, seed=1), tiny_encoder()
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config(), extra={"sampler": sampler.to_dict()})
    run = tmp_path / "run"
    save_bundle(Bundle(meta, net, enc, LogvarHead()), run / "student")
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(teacher_dir)}))
    return run


class CopyStudent(torch.nn.Module):
    """A "student" whose prediction of ``x0`` from pure noise is the teacher-as-copied endpoint
    (the rollout on the sampler's teacher route, guided in its interval at the student's ``w``),
    plus ``perturb`` times a fixed function of its input: its 1-step sampler *is* the teacher it copies."""

    def __init__(self, teacher: Teacher, sampler: StudentSampler, perturb: float = 0.0):
        super().__init__()
        self.teacher, self.sampler, self.perturb, self.sigma_d = teacher, sampler, perturb, teacher.sigma_d

    def forward(self, x_norm, t, cond, w):
        sd, x = self.sigma_d, self.sigma_d * x_norm
        route = self.sampler.teacher_route().to(x.dtype).expand(x.shape[0], -1)
        self.teacher.guidance_interval = tuple(self.sampler.guidance_interval) or None
        x0 = rollout(lambda xx, tt: self.teacher.velocity(xx, tt, cond, w), x, route).final
        x0 = x0 + self.perturb * sd * torch.sin(7 * x_norm)
        tb = t.view(-1, 1, 1, 1)
        return (torch.cos(tb) * x - x0) / (torch.sin(tb) * sd)  # so that f(x, t) = cos t x - sin t sd F = x0


def _fidelity_with_student(monkeypatch, run, teacher_dir, perturb: float) -> dict:
    teacher = Teacher.from_bundle(load_bundle(teacher_dir, expect_kind="teacher"))

    class Patched:
        @staticmethod
        def from_bundle(bundle):
            return CopyStudent(teacher, StudentSampler.from_extra(bundle.meta.extra), perturb)

    monkeypatch.setattr(evaluate_module, "Student", Patched)
    return evaluate(run, [1], 3, seed=5, fidelity=True)["fidelity"]


def test_a_student_that_is_the_teacher_it_copies_scores_zero_paired_error(tmp_path, tiny_teacher_dir, monkeypatch):
    run = _digits_run(tmp_path, tiny_teacher_dir)
    exact = _fidelity_with_student(monkeypatch, run, tiny_teacher_dir, 0.0)
    off = _fidelity_with_student(monkeypatch, run, tiny_teacher_dir, 0.3)
    assert exact["teacher"]["steps"] == 4 and exact["teacher"]["guidance_interval"] == [0.0, 0.5]
    assert exact["cfg_scale"] == 2.0 and exact["images"] == 30
    e, p = exact["steps"]["1"], off["steps"]["1"]
    assert e["latent_mse"] < 1e-10 and e["label_agreement"] == 1.0
    assert e["feature_distance"] < 1e-4 * e["feature_distance_unpaired"]
    assert p["latent_mse"] > 0.01 and p["feature_distance"] > 100 * e["feature_distance"]
    assert abs(e["fid_to_teacher"]) < 1e-3 * p["fid_to_teacher"]
    # the artefact measure: the same images have the same spectrum in every band, a perturbed student not
    assert e["spectrum_ratio"] == [1.0] * 4 and p["spectrum_ratio"] != [1.0] * 4
    # the scale each paired number comes with: independent teacher samples, the same for both
    assert e["latent_mse_unpaired"] == p["latent_mse_unpaired"] > p["latent_mse"]


def test_teacher_samples_kept_across_calls_are_sampled_once(tmp_path, tiny_teacher_dir, monkeypatch):
    run = _digits_run(tmp_path, tiny_teacher_dir)
    fresh = evaluate(run, [1], 2, seed=5, fidelity=True)
    made = []
    real = evaluate_module.teacher_fn
    monkeypatch.setattr(evaluate_module, "teacher_fn", lambda *a: made.append(a) or real(*a))
    kept: dict = {}
    first = evaluate(run, [1], 2, seed=5, fidelity=True, teacher_samples=kept)
    sampled = len(made)  # the teacher as copied at the student's guidance and each training scale
    assert sampled == 2 and len(kept) == 2
    again = evaluate(run, [1], 2, seed=5, fidelity=True, teacher_samples=kept)
    assert len(made) == sampled  # nothing sampled again
    other = evaluate(run, [1], 2, seed=6, fidelity=True, teacher_samples=kept)  # other images: sampled
    assert len(made) == 2 * sampled and len(kept) == 4
    for r in (first, again):
        assert r["fidelity"] == fresh["fidelity"] and r["teacher_as_copied"] == fresh["teacher_as_copied"]
    assert other["teacher_as_copied"]["fid"] != fresh["teacher_as_copied"]["fid"]


def test_the_teacher_against_itself_and_a_perturbed_copy(one_thread):
    suite = DigitsSuite()
    x0 = 0.5 * torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 0.5
    px = (x0 / 0.5).clamp(-1, 1)
    same = {**latent_error(x0, x0, 0.5, 2), **judged_error(px, px, 2, suite.features, suite.labels)}
    assert same["latent_mse"] == 0 and same["feature_distance"] == 0 and same["label_agreement"] == 1
    noisy = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    moved = latent_error(noisy, x0, 0.5, 2)
    assert moved["latent_mse"] == pytest.approx(float(((noisy - x0) / 0.5).pow(2).mean()), rel=1e-6)
    assert moved["latent_mse_se"] > 0
    with pytest.raises(ValueError):
        latent_error(x0[:3], x0, 0.5, 2)
    # independent samples: another image of the same prompt, or the next image with one per prompt
    assert unpaired(3, 6).tolist() == [1, 2, 0, 4, 5, 3] and unpaired(1, 3).tolist() == [1, 2, 0]


def test_scenes_judge_features_labels_and_data_floor(one_thread):
    from tbcm.scenes.evaluate import FLOOR_SEED, REF_SEED, ScenesSuite, _reference
    from tbcm.scenes.generator import parse_prompt, render_many, to_flow

    suite = ScenesSuite()
    real = to_flow(render_many([parse_prompt(p) for p in suite.prompts[:8]], 3))
    same = judged_error(real, real, 1, suite.features, suite.labels)
    assert same["feature_distance"] == 0 and same["label_agreement"] == 1
    other = judged_error(real.roll(1, 0), real, 1, suite.features, suite.labels)  # another prompt's scene
    assert other["feature_distance"] > 0 and other["label_agreement"] < 0.5
    floor = suite.data_floor(2)
    assert floor["images"] == 2 * len(suite.prompts) and floor["per_prompt"] == 2
    assert floor["fid"] == floor["seen"]["fid"] and all(floor[w]["fid"] > 0 for w in ("seen", "heldout"))
    assert FLOOR_SEED not in (REF_SEED, REF_SEED + 1) and FLOOR_SEED + 1 not in (REF_SEED, REF_SEED + 1)
    floor_images = to_flow(render_many([parse_prompt(p) for p in suite.prompts[:48] for _ in range(2)], FLOOR_SEED))
    assert not any(torch.equal(a, b) for a in floor_images[:20] for b in _reference("seen")[:200])


# -- the tiny diffusers families ------------------------------------------------------------------

FAMILY_PROMPTS = "a red cat\na blue dog under the tree\na green house\n"


def _diffusers_run(tmp_path, family: str):
    pytest.importorskip("diffusers")
    from .models.families import tiny_diffusers, tiny_sd3

    pipe = tmp_path / "pipe"
    if family == "sana":
        tiny_diffusers.save_tiny_sana_pipeline(pipe, sprint_style=True)  # dense time: no refit of the student
    elif family == "flux":
        tiny_diffusers.save_tiny_flux_pipeline(pipe)
    else:
        tiny_sd3.save_tiny_sd3_pipeline(pipe)
    teacher = load_bundle(pipe, expect_kind="teacher", text_cache=None)
    net = teacher.network.with_guidance_embed()
    t = teacher.meta
    sampler = StudentSampler(cfg_scale=3.0, cfg_scales=[3.0], guidance_interval=[0.0, 0.5], teacher_route_points=3)
    meta = ModelMeta(kind="student", sigma_d=t.sigma_d, channels=t.channels, image_size=t.image_size,
                     network=net.config.to_dict(), prompt_encoder=teacher.encoder.config(),
                     timestep_scale=t.timestep_scale, blank_value=t.blank_value, family=t.family,
                     extra={"sampler": sampler.to_dict()})
    run = tmp_path / "run"
    save_bundle(Bundle(meta, net, teacher.encoder, LogvarHead()), run / "student")
    (tmp_path / "prompts.txt").write_text(FAMILY_PROMPTS)
    (run / "config.yaml").write_text(yaml.safe_dump({"teacher": str(pipe), "prompts": str(tmp_path / "prompts.txt")}))
    return run


@pytest.mark.parametrize("family", ["sana", "flux", "sd3"])
def test_tiny_diffusers_students_get_fidelity_entries(family, tmp_path, capsys):
    run = _diffusers_run(tmp_path, family)
    argv = ["eval", str(run), "--fidelity", "--steps", "1,2", "--n", "1", "--no-progress", "--device", "cpu"]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["suite"] == "fidelity" and r["family"] == family and r["prompts"]["count"] == 3
    assert r["student"] == {} and r["reference"] is None and "data_floor" not in r
    fid = r["fidelity"]
    assert fid["images"] == 3 and fid["teacher"]["steps"] == 3 and fid["cfg_scale"] == 3.0
    assert fid["features"] is None and "--inception" in fid["note"]
    for steps in ("1", "2"):
        e = fid["steps"][steps]
        assert math.isfinite(e["latent_mse"]) and e["latent_mse"] > 0 and e["fid_to_teacher"] is None
        assert math.isfinite(e["latent_mse_unpaired"]) and "label_agreement" not in e
    assert main(argv) == 0
    assert "latent MSE/sigma_d^2" in capsys.readouterr().out
    # the judge flags need a judge
    assert "--teacher" in assert_cli_error([*argv, "--teacher", "2"], capsys)


def test_a_latent_student_with_inception_weights_gets_fid_to_its_teacher(tmp_path, capsys):
    from tbcm.evaluation.inception import save_inception_weights

    run = _diffusers_run(tmp_path, "flux")
    weights = save_inception_weights(tmp_path / "inception.pth")
    prompts = tmp_path / "two.txt"
    prompts.write_text("a red cat\na blue dog\n")
    argv = ["eval", str(run), "--fidelity", "--steps", "1", "--n", "2", "--no-progress", "--device", "cpu",
            "--inception", str(weights), "--prompts", str(prompts), "--json"]
    assert main(argv) == 0
    fid = json.loads(capsys.readouterr().out)["fidelity"]
    assert fid["features"] == "FID Inception pool3" and fid["images"] == 4 and "note" not in fid
    assert math.isfinite(fid["steps"]["1"]["fid_to_teacher"])
    assert "--inception" in assert_cli_error([a for a in argv if a != "--fidelity"], capsys)
