"""The Sana family: tiny real diffusers components with random weights, built and saved locally.

Checked against mathematics (the closed-form flow -> TrigFlow conversion, finite differences of
the student's JVP), against the ecosystem (the prompt encodings of SanaPipeline /
SanaSprintPipeline; SanaSprintPipeline generating from the exported folder exactly as tbcm's own
sampler does), and end to end through the CLI.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tbcm.cli import main
from tbcm.models.adapter import TrigFlowAdapter
from tbcm.models.bundle import load_bundle
from tbcm.models.families.sana.network import MathCrossAttnProcessor, student_transformer, time_embedding_error
from tbcm.models.student import Student
from tbcm.models.condition import TextCondition

from tbcm.models.bundle import Bundle, ModelMeta, save_bundle

from tests.conftest import assert_cli_error, tiny_encoder, tiny_network
from .tiny_diffusers import save_tiny_sana_pipeline

pytest.importorskip("diffusers")  # the test extra installs it; this only guards a bare install


@pytest.fixture(scope="module")
def sana_dir(tmp_path_factory):
    return save_tiny_sana_pipeline(tmp_path_factory.mktemp("sana") / "pipe")


@pytest.fixture(scope="module")
def sprint_dir(tmp_path_factory):
    return save_tiny_sana_pipeline(tmp_path_factory.mktemp("sprint") / "pipe", sprint_style=True, seed=1)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a photo of a cat\na red car on the house\nblue sky with sun\na dog under the tree\n")
    return path


def _closed_form_F(v, x, t):
    """METHOD.md: tau = sin t / (sin t + cos t), x_flow = x sqrt(tau^2 + (1-tau)^2),
    F = ((1 - 2 tau) x_flow + (1 - 2 tau + 2 tau^2) v) / sqrt(tau^2 + (1 - tau)^2)."""
    tau = (torch.sin(t) / (torch.sin(t) + torch.cos(t))).view(-1, 1, 1, 1)
    norm = torch.sqrt(tau ** 2 + (1 - tau) ** 2)
    x_flow = x * norm
    return ((1 - 2 * tau) * x_flow + (1 - 2 * tau + 2 * tau ** 2) * v) / norm, x_flow, tau.flatten()


def _cond(bundle, prompts):
    return bundle.encoder.encode(prompts)


@pytest.mark.parametrize("which,multiplier", [("sana", 1000.0), ("sprint", 1.0)])
def test_teacher_adapter_is_the_closed_form_conversion(which, multiplier, sana_dir, sprint_dir, tmp_path):
    folder = sana_dir if which == "sana" else sprint_dir
    bundle = load_bundle(folder, expect_kind="teacher", text_cache=str(tmp_path))
    assert bundle.network.time_multiplier == multiplier  # 1000 tau, or tau for the dense time embedding
    torch.manual_seed(0)
    x, t = torch.randn(3, 4, 16, 16), torch.tensor([0.2, 0.9, 1.5])
    cond = _cond(bundle, ["a photo of a cat", "red car", ""])
    F = TrigFlowAdapter(bundle.network, bundle.meta.timestep_scale)(x, t, cond)
    transformer = bundle.network.transformer
    # The raw transformer called as SanaPipeline calls it: timestep = 1000 tau * config.timestep_scale.
    _, x_flow, tau = _closed_form_F(torch.zeros_like(x), x, t)
    timestep = 1000 * tau * transformer.config.timestep_scale
    v = transformer(hidden_states=x_flow, encoder_hidden_states=cond.embeds, encoder_attention_mask=cond.mask,
                    timestep=timestep, return_dict=False)[0]
    expected, _, _ = _closed_form_F(v, x, t)
    torch.testing.assert_close(F, expected, rtol=1e-5, atol=1e-5)


def test_untrained_student_equals_teacher_for_every_guidance_scale(sprint_dir, tmp_path):
    bundle = load_bundle(sprint_dir, expect_kind="teacher", text_cache=str(tmp_path))
    teacher_F = TrigFlowAdapter(bundle.network, 1.0)
    student = Student(bundle.network.with_guidance_embed(), bundle.meta.sigma_d, 1.0)
    procs = student.network.transformer.attn_processors
    assert any(isinstance(p, MathCrossAttnProcessor) for p in procs.values())  # JVP-safe cross-attention
    torch.manual_seed(1)
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([0.4, 1.2])
    cond = _cond(bundle, ["a photo of a cat", "blue sky"])
    with torch.no_grad():
        want = teacher_F(x, t, cond)
        for w in (1.0, 4.5):
            got = student(x, t, cond, torch.full((2,), w))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_time_refit_recovers_a_teacher_time_embedding_the_dense_input_can_express(sana_dir, tmp_path):
    """A 1000-tau teacher, the dense-time (tau) student. Its sinusoidal features reach 1 rad per unit
    tau, the teacher's 1000: only the teacher's low-frequency channels can be matched. A teacher
    whose timestep MLP reads just those channels is matched almost exactly by the refit; a random
    teacher's error still falls."""
    import copy

    bundle = load_bundle(sana_dir, expect_kind="teacher", text_cache=str(tmp_path))
    teacher = bundle.network.transformer
    band_limited = copy.deepcopy(teacher)
    half = band_limited.time_embed.emb.time_proj.num_channels // 2
    freqs = 1000 * torch.exp(-math.log(10000) * torch.arange(half) / half)  # radians per unit tau
    keep = (freqs <= 1.0).float()
    with torch.no_grad():  # features are [cos, sin] halves (flip_sin_to_cos)
        band_limited.time_embed.emb.timestep_embedder.linear_1.weight.mul_(torch.cat([keep, keep])[None])
    for t, bound in ((band_limited, 0.02), (teacher, None)):
        copied = student_transformer(t, 1000.0, refit_steps=0)
        refitted = student_transformer(t, 1000.0, refit_steps=300)
        before, after = time_embedding_error(t, copied, 1000.0), time_embedding_error(t, refitted, 1000.0)
        assert after < before, (before, after)
        if bound is not None:
            assert after < bound and after < before / 5, (before, after)


def test_student_jvp_matches_central_differences(sprint_dir, tmp_path):
    bundle = load_bundle(sprint_dir, expect_kind="teacher", text_cache=str(tmp_path))
    student = Student(bundle.network.with_guidance_embed().double(), bundle.meta.sigma_d, 1.0)
    torch.manual_seed(2)
    x, t = torch.randn(2, 4, 16, 16, dtype=torch.float64), torch.tensor([0.5, 1.1], dtype=torch.float64)
    dx = torch.randn_like(x)
    c = _cond(bundle, ["a photo of a cat", "a dog"])
    cond = TextCondition(c.embeds.double(), c.mask)
    w = torch.full((2,), 4.5, dtype=torch.float64)

    def f(xx, tt):
        return student(xx, tt, cond, w)

    with torch.no_grad():
        _, jvp = torch.func.jvp(f, (x, t), (dx, torch.ones_like(t)))
        errors = []
        for h in (1e-2, 1e-3, 1e-4):
            fd = (f(x + h * dx, t + h) - f(x - h * dx, t - h)) / (2 * h)
            errors.append((fd - jvp).abs().max().item())
    # Sana's time features are computed in float32 inside diffusers, which floors the difference
    # quotient near 1e-4 relative; until then the error must fall fast (a wrong JVP would not).
    assert min(errors) < 2e-3 * jvp.abs().max().item(), errors
    assert errors[1] < errors[0] / 10, errors


def test_prompt_encodings_are_the_pipelines_and_come_back_from_the_cache(sana_dir, tmp_path, monkeypatch):
    from diffusers import SanaPipeline, SanaSprintPipeline

    bundle = load_bundle(sana_dir, expect_kind="teacher", text_cache=str(tmp_path))
    enc = bundle.encoder
    prompts = ["a photo of a cat", "", "red car"]
    first = enc.encode(prompts)
    assert first.embeds.shape == (3, 300, 32) and first.mask.shape == (3, 300)
    sprint = SanaSprintPipeline(tokenizer=enc.tokenizer, text_encoder=enc.text_encoder, vae=None,
                                transformer=None, scheduler=None)
    pipe = SanaPipeline(tokenizer=enc.tokenizer, text_encoder=enc.text_encoder, vae=None,
                        transformer=None, scheduler=None)
    with torch.no_grad():
        embeds, mask = sprint.encode_prompt("a photo of a cat", device="cpu", complex_human_instruction=enc.instruction)
        _, _, null_embeds, null_mask = pipe.encode_prompt("a photo of a cat", do_classifier_free_guidance=True,
                                                          negative_prompt="", device="cpu")
    torch.testing.assert_close(first.embeds[0], embeds[0])
    torch.testing.assert_close(first.mask[0], mask[0].float())
    torch.testing.assert_close(first.embeds[1], null_embeds[0])  # "" is SanaPipeline's negative prompt
    torch.testing.assert_close(first.mask[1], null_mask[0].float())
    assert len(list(enc.cache_dir.glob("*.safetensors"))) == 3

    def no_encoder(*_a, **_k):
        raise AssertionError("the text encoder ran although every prompt is cached")

    monkeypatch.setattr(enc, "_encode_uncached", no_encoder)
    again = enc.encode(prompts)
    torch.testing.assert_close(again.embeds, first.embeds, rtol=0, atol=0)


def test_distill_export_and_generate_with_sana_sprint_pipeline(sana_dir, prompts_file, tmp_path):
    """A few real steps on a tiny Sana teacher, then SanaSprintPipeline runs the exported folder
    at 1, 2 and 4 steps and reproduces tbcm's own sampler on the same noise."""
    from diffusers import SanaSprintPipeline

    from tbcm.sampling import student_sample

    run, cache = tmp_path / "run", tmp_path / "text"
    rc = main(["distill", "--out", str(run), "--no-progress", f"teacher={sana_dir}", f"prompts={prompts_file}",
               "steps=3", "prompts_per_step=2", "pairs.route_points=4", f"text_cache={cache}", "preview.seeds=1", "sampler.shift=0.25",
               "sampler.tune=false",  # the saved shifted route, untuned: its 2-step angle is checked below
               "preview.teacher_steps=2", "preview.student_steps=[1,2]", "optim.lr=1e-3", "optim.warmup_steps=0",
               # a random 1000-tau teacher: the refitted dense time embedding is ~7% off (see the
               # checked-start test); export is what this test is about
               "start_check_max_error=0"])
    assert rc == 0
    assert (run / "samples.png").is_file() and (run / "student" / "transformer" / "config.json").is_file()
    student_bundle = load_bundle(run / "student", expect_kind="student", text_cache=str(cache))
    teacher_bundle = load_bundle(sana_dir, expect_kind="teacher", text_cache=str(cache))
    init = teacher_bundle.network.with_guidance_embed(refit_steps=300).transformer.state_dict()
    trained = student_bundle.network.transformer.state_dict()
    assert set(init) == set(trained)
    assert any(not torch.equal(init[k], trained[k]) for k in init)  # training moved the weights

    out = tmp_path / "export"
    assert main(["export", str(run), "--format", "diffusers", "--out", str(out)]) == 0
    pipe = SanaSprintPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    sampling = json.loads((out / "tbcm_sampling.json").read_text())
    student = Student(student_bundle.network, student_bundle.meta.sigma_d, student_bundle.meta.timestep_scale).eval()
    cond = student_bundle.encoder.encode(["a red car on the house"])
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for n in (1, 2, 4):
        kwargs = sampling["call"][str(n)]
        latents = pipe("a red car on the house", latents=noise.clone(), guidance_scale=4.5, height=32, width=32,
                       use_resolution_binning=False, output_type="latent",
                       generator=torch.Generator().manual_seed(1), **kwargs).images
        with torch.no_grad():
            ours = student_sample(student, cond, torch.tensor([4.5]), noise, sampling["angles"][str(n)],
                                  generator=torch.Generator().manual_seed(1)) / student_bundle.meta.sigma_d
        torch.testing.assert_close(latents, ours, rtol=1e-4, atol=1e-4)
        images = pipe(["a photo of a cat", "blue sky"], guidance_scale=4.5, height=32, width=32,
                      use_resolution_binning=False, output_type="pt", **kwargs).images
        assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    assert sampling["angles"]["1"] == [math.pi / 2, 0.0]
    # the 2-step middle angle is the student's own route's (sampler.shift), not the teacher's
    shift = student_bundle.meta.extra["sampler"]["shift"]
    assert shift == 0.25 and student_bundle.meta.extra["sampler"]["teacher_route_shift"] == 2.5
    assert abs(sampling["angles"]["2"][1] - math.atan(shift)) < 1e-6
    assert sampling["tbcm_angles"]["2"] == sampling["angles"]["2"]  # no explicit route saved: the same 2 steps

    from tbcm.generate import load_image_generator  # what `tbcm eval --reference` generates with

    generator = load_image_generator(run / "student", steps=2)
    assert generator.resolution == 32
    images = generator.generate(["a photo of a cat", "blue sky"], [0, 1])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, generator.generate(["a photo of a cat", "blue sky"], [0, 1]))  # seeded


def test_sana_bad_input_is_one_line(sana_dir, prompts_file, tmp_path, capsys):
    run = tmp_path / "run"
    err = assert_cli_error(["distill", "--out", str(run), f"teacher={sana_dir}", f"prompts={prompts_file}",
                            "source=forward", f"text_cache={tmp_path / 't'}"], capsys)
    assert "source=forward" in err and not run.exists()
    assert "does not exist" in assert_cli_error(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")],
                                                capsys)
    (tmp_path / "taken").mkdir()
    assert "already exists" in assert_cli_error(["export", str(run), "--out", str(tmp_path / "taken")], capsys)
    net, enc = tiny_network(guidance=True), tiny_encoder()
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config())
    digits_student = save_bundle(Bundle(meta, net, enc), tmp_path / "digits")
    assert "exports students of diffusers teachers" in assert_cli_error(
        ["export", str(digits_student), "--out", str(tmp_path / "y")], capsys)


def test_the_checked_start_refuses_a_1000_tau_teacher_the_student_cannot_match(sana_dir, sprint_dir, prompts_file,
                                                                             tmp_path, capsys):
    run = tmp_path / "run"
    common = [f"prompts={prompts_file}", f"text_cache={tmp_path / 'text'}", "steps=1", "prompts_per_step=1",
              "pairs.route_points=3", "preview.teacher_steps=2", "preview.seeds=1", "preview.student_steps=[1]", "sampler.tune=false"]
    assert main(["distill", "--out", str(run), "--no-progress", f"teacher={sana_dir}", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the prompt-encoding progress bar
    assert err.startswith("tbcm: error: ") and "teacher_time_multiplier" in err and "away from the teacher" in err and not run.exists()
    # a dense-time teacher: the student is the same network, the check passes and is logged
    assert main(["distill", "--out", str(run), "--no-progress", f"teacher={sprint_dir}", *common]) == 0
    header, row = (run / "metrics.csv").read_text().splitlines()[:2]
    start = float(dict(zip(header.split(","), row.split(",")))["start_error"])
    assert 0 <= start < 1e-3


def test_the_documented_sana_config_runs_with_local_paths(sprint_dir, prompts_file, tmp_path):
    """configs/distill_sana.yaml as written, with only the paths, the length and the device changed
    (the paper's recipe: a dense-time, Sana-Sprint-style teacher)."""
    from pathlib import Path

    config = Path(__file__).resolve().parents[3] / "configs" / "distill_sana.yaml"
    run = tmp_path / "run"
    rc = main(["distill", "--config", str(config), "--out", str(run), "--no-progress", f"teacher={sprint_dir}",
               f"prompts={prompts_file}", f"text_cache={tmp_path / 'text'}", "steps=1", "device=cpu",
               "preview.teacher_steps=2", "preview.seeds=1", "preview.student_steps=[1]"])
    assert rc == 0
    assert load_bundle(run / "student", expect_kind="student", text_cache=None).meta.family == "sana"


def test_degenerate_filter_compares_with_the_vaes_black_latent(sana_dir, prompts_file, tmp_path):
    from diffusers import AutoencoderDC

    from tbcm.config import DistillConfig, load_config
    from tbcm.train import Distiller

    d = Distiller(load_config(DistillConfig, None, [f"teacher={sana_dir}", f"prompts={prompts_file}",
                                                    "pairs.blank_threshold=1.0", "pairs.route_points=3", "threads=1",
                                                    f"text_cache={tmp_path / 'text'}", "pairs.pool_prompts=0"]))
    blank = d.source.blank_value
    assert tuple(blank.shape) == d.image_shape
    # independently: the pipeline's own VAE on a black image, normalised as SanaPipeline's latents
    vae = AutoencoderDC.from_pretrained(str(sana_dir / "vae"))
    h = d.image_shape[-1] * vae.spatial_compression_ratio
    z = vae.encode(-torch.ones(1, 3, h, h)).latent[0] * vae.config.scaling_factor
    torch.testing.assert_close(blank, z.detach(), rtol=1e-5, atol=1e-6)
    sd = d.sigma_d
    black_x0 = (sd * blank).expand(4, *blank.shape)
    assert torch.all(d.source.keep_mask(black_x0) == 0)  # MSE 0 to the black latent: always dropped
    far = black_x0 + sd * 10.0
    assert torch.all(d.source.keep_mask(far) == 1)  # MSE 100 > threshold: always kept
    d.train_step()  # and a step runs with the filter on


def test_the_sanapipeline_config_loads_and_names_its_differences():
    from pathlib import Path

    from tbcm.config import DistillConfig, load_config

    root = Path(__file__).resolve().parents[3] / "configs"
    sprint = load_config(DistillConfig, root / "distill_sana.yaml")
    plain = load_config(DistillConfig, root / "distill_sana_pipeline.yaml")
    assert sprint.optim.name == plain.optim.name == "came" and sprint.pairs.jitter and plain.pairs.jitter
    assert (sprint.teacher_time_multiplier, plain.teacher_time_multiplier) == (1.0, 0.0)
    assert sprint.cfg_scales == [4.0, 4.5, 5.0] and sprint.optim.lr == 1e-5 and sprint.optim.grad_clip == 0.1


def test_streamed_encodings_are_sharded_read_per_batch_and_repaired(sana_dir, tmp_path):
    from tbcm.errors import UserError
    from tbcm.models.families.sana.text import SanaPromptEncoder
    from tbcm.models.text_cache import CachedConditions

    prompts = [f"a photo of a {w}" for w in ("cat", "dog", "car", "house", "tree")] + ["a photo of a cat"]
    enc = SanaPromptEncoder(sana_dir, cache_dir=tmp_path / "cache")
    # two ranks share the work: each prompt is encoded once in all, a second pass encodes nothing
    assert enc.fill_cache(prompts, 0, 2) + enc.fill_cache(prompts, 1, 2) == 5
    assert enc.fill_cache(prompts, 0, 1) == 0
    conds = enc.cached_conditions(prompts)
    assert len(conds) == 6 and conds.keys.nbytes <= 64 * 6  # no tensors held, only keys
    rows = conds.index(torch.tensor([4, 0, 5]))
    full = enc.encode(prompts)
    torch.testing.assert_close(rows.embeds, full.embeds[[4, 0, 5]], rtol=0, atol=0)
    assert torch.equal(rows.mask, full.mask[[4, 0, 5]])
    # a damaged entry is re-encoded on read; without an encoder it is named in one line
    path = conds.cache_dir / f"{conds.keys[1].decode()}.safetensors"
    path.write_bytes(b"not safetensors")
    torch.testing.assert_close(conds.index([1]).embeds, full.embeds[[1]])
    path.write_bytes(b"not safetensors")
    bare = CachedConditions(conds.cache_dir, [k.decode() for k in conds.keys])
    with pytest.raises(UserError, match="missing or damaged"):
        bare.index([1])
    # freed text encoder: cached prompts still encode, new ones are named in one line
    enc.encode(prompts)
    enc.free_text_encoders()
    assert torch.equal(enc.encode(prompts[:2]).embeds, full.embeds[:2])
    with pytest.raises(UserError, match="freed"):
        enc.encode(["a photo of a boat"])


def test_the_exported_sampling_record_is_the_student_samplers():
    """``tbcm_sampling.json`` from the sampler object: the pipeline's 2-step middle angle is the
    sampler's own (its explicit 2-step route here, not arctan(shift)), 4 steps the pipeline's even
    spacing beside the 4-step route ``tbcm sample`` runs, and the sampler read back whole."""
    from tbcm.models.families.sana.export import sampling_record
    from tbcm.sampler import StudentSampler

    sampler = StudentSampler(cfg_scale=3.0, shift=1.0, fresh_noise=0.5, routes={2: [0.4], 4: [0.9, 0.5, 0.2]})
    record = json.loads(json.dumps(sampling_record(sampler)))  # as written to the file
    assert record["guidance_scale"] == 3.0 and record["fresh_noise"] == 0.5 and record["pipeline_fresh_noise"] == 1.0
    assert record["call"]["2"]["intermediate_timesteps"] == 0.4 and record["call"]["4"]["intermediate_timesteps"] is None
    assert record["angles"]["2"] == record["tbcm_angles"]["2"] == [math.pi / 2, 0.4, 0.0]
    assert record["angles"]["4"] == [math.pi / 2 * (1 - i / 4) for i in range(5)]
    assert record["tbcm_angles"]["4"] == [math.pi / 2, 0.9, 0.5, 0.2, 0.0]
    assert record["tbcm_angles"]["1"] == record["angles"]["1"] == [math.pi / 2, 0.0]
    assert StudentSampler.from_extra({"sampler": record["sampler"]}) == sampler
    shifted = sampling_record(sampler.overridden(shift=2.5))  # no 2-step route: arctan(shift)
    assert shifted["call"]["2"]["intermediate_timesteps"] == pytest.approx(math.atan(2.5))
