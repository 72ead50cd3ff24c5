"""SD3 / SD3.5 teachers and students (tiny random StableDiffusion3Pipeline): the adapter against the
closed-form conversion of the raw transformer called as the pipeline calls it, the null condition
against the pipeline's negative prompt, untrained student = teacher, the student's JVP against
finite differences, the prompt cache against encode_prompt, a whole `tbcm distill` run, then
`tbcm sample`, `tbcm eval --reference` and `tbcm export` of its student."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

pytest.importorskip("diffusers")

from diffusers import StableDiffusion3Pipeline  # noqa: E402

from tbcm.errors import UserError  # noqa: E402
from tbcm.models.adapter import TrigFlowAdapter  # noqa: E402
from tbcm.models.bundle import load_bundle  # noqa: E402
from tbcm.models.families.sd3.bundle import load_teacher  # noqa: E402
from tbcm.models.families.sd3.network import MathSDPAProcessor  # noqa: E402
from tbcm.models.families.sd3.text import SD3PromptEncoder  # noqa: E402
from tbcm.models.registry import family_of_pipeline  # noqa: E402
from tests.models.families.checks import cache_round_trip, student_jvp_fd_errors  # noqa: E402
from tbcm.models.student import Student  # noqa: E402
from tbcm.models.teacher import Teacher  # noqa: E402
from tests.models.families.tiny_sd3 import save_tiny_sd3_pipeline  # noqa: E402

PROMPTS = ["a red cat", "a blue dog under the tree"]


@pytest.fixture(scope="module", params=["sd3", "sd35"])
def sd3_dir(request, tmp_path_factory):
    return save_tiny_sd3_pipeline(tmp_path_factory.mktemp(request.param) / "pipe", sd35=request.param == "sd35")


@pytest.fixture(scope="module")
def teacher(sd3_dir):
    return load_teacher(sd3_dir, text_cache=None)


@pytest.fixture(scope="module")
def pipe(sd3_dir):
    return StableDiffusion3Pipeline.from_pretrained(str(sd3_dir), local_files_only=True)


def _inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 16, 8, 8, generator=g, dtype=dtype), torch.tensor([0.35, 1.2], dtype=dtype)


def test_an_sd3_pipeline_folder_is_an_sd3_teacher(sd3_dir, teacher):
    assert family_of_pipeline(sd3_dir) == "sd3"
    m = teacher.meta
    assert (m.family, m.channels, m.image_size, m.sigma_d, m.timestep_scale) == ("sd3", 16, 8, 0.5, 1000.0)


def test_adapter_equals_the_closed_form_conversion_of_the_raw_transformer(teacher, pipe):
    cond = teacher.encoder.encode(PROMPTS)
    x_norm, t = _inputs()
    with torch.no_grad():
        F = TrigFlowAdapter(teacher.network, teacher.meta.timestep_scale)(x_norm, t, cond)
        # METHOD.md by hand; the transformer called as StableDiffusion3Pipeline calls it (timestep = 1000 sigma)
        tb = t.view(-1, 1, 1, 1)
        tau = torch.sin(tb) / (torch.sin(tb) + torch.cos(tb))
        norm = torch.sqrt(tau**2 + (1 - tau) ** 2)
        x_flow = x_norm * norm
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                                  max_sequence_length=teacher.encoder.max_sequence_length)
        v = pipe.transformer(hidden_states=x_flow, timestep=1000 * tau.flatten(), encoder_hidden_states=embeds,
                             pooled_projections=pooled, return_dict=False)[0]
        expected = ((1 - 2 * tau) * x_flow + (1 - 2 * tau + 2 * tau**2) * v) / norm
    assert float(v.abs().mean()) > 0.1  # a network that does something
    torch.testing.assert_close(F, expected, atol=1e-5, rtol=1e-5)


def test_the_null_condition_is_the_pipelines_empty_negative_prompt(teacher, pipe):
    null = Teacher.from_bundle(teacher).null_cond
    with torch.no_grad():
        _, neg, _, neg_pooled = pipe.encode_prompt(PROMPTS[:1], None, None, do_classifier_free_guidance=True,
                                                   negative_prompt="", max_sequence_length=12)
    torch.testing.assert_close(null.embeds, neg, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(null.pooled, neg_pooled, atol=1e-6, rtol=1e-6)


def test_the_untrained_student_equals_the_teacher_for_any_w(teacher):
    cond = teacher.encoder.encode(PROMPTS)
    x_norm, t = _inputs(1)
    net = teacher.network.with_guidance_embed()
    kinds = lambda tr: {type(p).__name__ for p in tr.attn_processors.values()}  # noqa: E731
    assert kinds(net.transformer) == {"MathSDPAProcessor"} and "MathSDPAProcessor" not in kinds(teacher.network.transformer)
    with torch.no_grad():
        f_teacher = TrigFlowAdapter(teacher.network, 1000.0)(x_norm, t, cond)
        for w in (0.0, 1.0, 4.5, 7.0):
            f_student = TrigFlowAdapter(net, 1000.0)(x_norm, t, cond, guidance=torch.full((2,), w))
            torch.testing.assert_close(f_student, f_teacher, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="guidance"):
        net(x_norm, t, cond)  # a student without its CFG scale is a caller's bug, not a silent w = 0


def test_student_jvp_matches_central_finite_differences(teacher):
    x, t = _inputs(2, torch.float64)
    errors = student_jvp_fd_errors(teacher, PROMPTS, x, t)
    # SD3 embeds 1000 tau: the derivative in t is steep; diffusers computes the sinusoidal timestep
    # features in float32, which floors the difference well below these errors
    assert errors[-1] < 5e-3, errors
    assert all(3 < a / b < 5 for a, b in zip(errors, errors[1:])), errors  # halving h quarters the error


def test_prompt_cache_round_trips_and_equals_encode_prompt(sd3_dir, pipe, tmp_path, monkeypatch):
    prompts = [*PROMPTS, "", PROMPTS[0]]
    first = cache_round_trip(lambda d: SD3PromptEncoder(sd3_dir, cache_dir=d), prompts, tmp_path, monkeypatch)
    # 8 CLIP tokens + 12 T5 tokens, T5 width 32; pooled: CLIP projections 8 + 16
    assert first.embeds.shape == (4, 20, 32) and first.pooled.shape == (4, 24) and bool((first.mask == 1).all())
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False,
                                                  max_sequence_length=12)
    torch.testing.assert_close(first.embeds, embeds, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(first.pooled, pooled, atol=1e-6, rtol=1e-6)
    # streamed: the same rows served from the disk cache
    streamed = SD3PromptEncoder(sd3_dir, cache_dir=tmp_path).cached_conditions(prompts).index(torch.tensor([1, 2]))
    assert torch.equal(streamed.embeds, first.embeds[1:3]) and torch.equal(streamed.pooled, first.pooled[1:3])


def test_a_time_multiplier_is_refused_in_one_line(sd3_dir):
    with pytest.raises(UserError, match="does not apply to SD3") as info:
        load_teacher(sd3_dir, text_cache=None, time_multiplier=1.0)
    assert "\n" not in str(info.value)


def test_distill_sample_eval_and_export_an_sd3_student(sd3_dir, teacher, tmp_path, capsys):
    from tbcm.cli import main
    from tests.test_realscale_eval import _tiny_clip, save_inception_weights

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([*PROMPTS, "a green bird", "a small house in the city"]) + "\n")
    out = tmp_path / "run"
    rc = main(["distill", "--out", str(out), f"teacher={sd3_dir}", f"prompts={prompts}", "steps=2",
               "prompts_per_step=2", f"text_cache={tmp_path / 'cache'}", "preview.seeds=1", "preview.teacher_steps=2",
               "pairs.route_points=4", "pairs.blank_threshold=0.01", "sampler.tune_images=8"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "start check" in captured.out + captured.err  # the untrained student was measured against the teacher
    assert yaml.safe_load((out / "student" / "model.yaml").read_text())["family"] == "sd3"
    student = load_bundle(out / "student", expect_kind="student", text_cache=None)
    assert student.meta.family == "sd3" and student.logvar_head is not None
    trained = student.network.transformer.state_dict()
    initial = teacher.network.with_guidance_embed().transformer.state_dict()
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)
    assert any(k.startswith("time_text_embed.guidance_embedder.") and not torch.equal(trained[k], initial[k])
               for k in trained)  # the guidance input was saved and loaded back, trained
    cond = student.encoder.encode(PROMPTS)
    x_norm, _ = _inputs(4)
    with torch.no_grad():
        F = Student.from_bundle(student)(x_norm, torch.full((2,), math.pi / 2), cond, torch.full((2,), 4.5))
        pixels = student.decode(-student.meta.sigma_d * F)
    assert pixels.shape == (2, 3, 16, 16) and bool(torch.isfinite(pixels).all())

    png = tmp_path / "sample.png"
    assert main(["sample", "--student", str(out), "--prompt", PROMPTS[0], "--steps", "2", "--n", "2",
                 "--out", str(png), "--device", "cpu"]) == 0
    assert png.is_file()

    ref = tmp_path / "ref"
    (ref / "animals").mkdir(parents=True)
    from PIL import Image

    meta_data = {}
    for i, p in enumerate(PROMPTS * 2):
        Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(ref / "animals" / f"{i}.jpg")
        meta_data[str(i)] = {"prompt": p, "category": "animals"}
    (ref / "meta_data.json").write_text(json.dumps(meta_data))
    inception = save_inception_weights(tmp_path / "inception.pth")
    capsys.readouterr()
    assert main(["eval", str(out), "--reference", str(ref), "--inception", str(inception), "--clip",
                 str(_tiny_clip(tmp_path / "clip")), "--n", "4", "--batch", "2", "--steps", "1", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reference"]["images"] == 4 and result["family"] == "sd3" and result["resolution"] == 16
    assert math.isfinite(result["student"]["1"]["fid"]) and math.isfinite(result["student"]["1"]["clip_score"])

    # a distilled run exports (test_export_families.py checks the folder generates what tbcm does)
    assert main(["export", str(out), "--out", str(tmp_path / "exported")]) == 0
    assert "StableDiffusion3Pipeline.from_pretrained" in capsys.readouterr().out
    assert (tmp_path / "exported" / "model_index.json").is_file()


def test_the_math_processor_computes_what_the_fused_one_does(teacher):
    """The student's attention is the teacher's maths: same inputs, the two paths agree."""
    tr = teacher.network.transformer
    name, fused = next(iter(tr.attn_processors.items()))
    attn = tr.get_submodule(name.removesuffix(".processor"))
    g = torch.Generator().manual_seed(5)
    h, c = torch.randn(2, 16, 16, generator=g), torch.randn(2, 20, 16, generator=g)
    with torch.no_grad():
        a = fused(attn, h, c)
        b = MathSDPAProcessor(fused)(attn, h, c)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
