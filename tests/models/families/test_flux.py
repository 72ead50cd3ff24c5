"""FLUX teachers and students (tiny random FluxPipeline): the adapter against the closed-form
conversion, untrained student = teacher, the student's JVP against finite differences, the prompt
cache against FluxPipeline.encode_prompt, and a whole `tbcm distill` run."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

pytest.importorskip("diffusers")

from diffusers import FluxPipeline  # noqa: E402

from tbcm.errors import UserError  # noqa: E402
from tbcm.models.adapter import TrigFlowAdapter, guided_F  # noqa: E402
from tbcm.models.bundle import load_bundle  # noqa: E402
from tbcm.models.registry import family_of_pipeline  # noqa: E402
from tests.models.families.checks import cache_round_trip, student_jvp_fd_errors  # noqa: E402
from tbcm.models.families.flux.bundle import load_teacher  # noqa: E402
from tbcm.models.families.flux.text import FluxPromptEncoder  # noqa: E402
from tbcm.models.student import Student  # noqa: E402
from tbcm.models.condition import TextCondition  # noqa: E402

from .tiny_diffusers import save_tiny_flux_pipeline  # noqa: E402

PROMPTS = ["a red cat", "a blue dog under the tree"]


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux_pipeline(tmp_path_factory.mktemp("flux") / "pipe")


@pytest.fixture(scope="module")
def teacher(flux_dir):
    return load_teacher(flux_dir, text_cache=None)


@pytest.fixture(scope="module")
def pipe(flux_dir):
    return FluxPipeline.from_pretrained(str(flux_dir), local_files_only=True)


def _inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=dtype)
    return x, torch.tensor([0.35, 1.2], dtype=dtype)


def test_a_flux_pipeline_folder_is_a_flux_teacher(flux_dir, teacher):
    assert family_of_pipeline(flux_dir) == "flux"
    m = teacher.meta
    assert (m.family, m.channels, m.image_size, m.sigma_d, m.timestep_scale) == ("flux", 4, 8, 0.5, 1.0)
    assert teacher.network.config.in_channels == 4 and teacher.network.config.image_size == 8


def test_adapter_equals_the_closed_form_conversion_of_the_raw_transformer(teacher, pipe):
    cond = teacher.encoder.encode(PROMPTS)
    x_norm, t = _inputs()
    with torch.no_grad():
        F = TrigFlowAdapter(teacher.network, teacher.meta.timestep_scale)(x_norm, t, cond)
        # METHOD.md by hand, the transformer called as FluxPipeline calls it
        tb = t.view(-1, 1, 1, 1)
        tau = torch.sin(tb) / (torch.sin(tb) + torch.cos(tb))
        norm = torch.sqrt(tau**2 + (1 - tau) ** 2)
        x_flow = x_norm * norm
        b, c, h, w = x_flow.shape
        packed = FluxPipeline._pack_latents(x_flow, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
        embeds, pooled, txt_ids = pipe.encode_prompt(PROMPTS, max_sequence_length=teacher.encoder.max_sequence_length)
        v = pipe.transformer(hidden_states=packed, timestep=tau.flatten(), pooled_projections=pooled,
                             encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        v = FluxPipeline._unpack_latents(v, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor,
                                         pipe.vae_scale_factor)
        expected = ((1 - 2 * tau) * x_flow + (1 - 2 * tau + 2 * tau**2) * v) / norm
    assert float(v.abs().mean()) > 0.1  # a network that does something
    torch.testing.assert_close(F, expected, atol=1e-5, rtol=1e-5)


def test_the_untrained_student_equals_the_teacher_for_any_w(teacher):
    cond = teacher.encoder.encode(PROMPTS)
    x_norm, t = _inputs(1)
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default_backend = _AttentionBackendRegistry.get_active_backend()[0]
    net = teacher.network.with_guidance_embed()
    assert net.transformer.config.guidance_embeds and not teacher.network.transformer.config.guidance_embeds
    # the student's attention is the math path; the teacher's (and diffusers' default) stay as they were
    backends = lambda tr: {str(m.processor._attention_backend) for m in tr.modules() if hasattr(m, "processor")}  # noqa: E731
    assert backends(net.transformer) == {"AttentionBackendName._NATIVE_MATH"}
    assert backends(teacher.network.transformer) == {"None"}
    assert _AttentionBackendRegistry.get_active_backend()[0] == default_backend
    with torch.no_grad():
        f_teacher = TrigFlowAdapter(teacher.network, 1.0)(x_norm, t, cond)
        for w in (0.0, 1.0, 4.5, 7.0):
            f_student = TrigFlowAdapter(net, 1.0)(x_norm, t, cond, guidance=torch.full((2,), w))
            torch.testing.assert_close(f_student, f_teacher, atol=1e-5, rtol=1e-5)


def test_student_jvp_matches_central_finite_differences(teacher):
    x, t = _inputs(2, torch.float64)
    errors = student_jvp_fd_errors(teacher, PROMPTS, x, t)
    # FLUX embeds 1000 tau, so the derivative in t is steep and h must be small; diffusers computes
    # the rotary and timestep embeddings in float32, which floors the difference near 5e-4.
    assert errors[-1] < 5e-3, errors
    assert all(3 < a / b < 5 for a, b in zip(errors, errors[1:])), errors  # halving h quarters the error


def test_prompt_cache_round_trips_and_equals_flux_pipeline_encode_prompt(flux_dir, pipe, tmp_path, monkeypatch):
    prompts = [*PROMPTS, "", PROMPTS[0]]
    first = cache_round_trip(lambda d: FluxPromptEncoder(flux_dir, cache_dir=d), prompts, tmp_path, monkeypatch)
    assert first.embeds.shape == (4, 12, 32) and first.pooled.shape == (4, 16) and bool((first.mask == 1).all())
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(prompts, max_sequence_length=12)
    torch.testing.assert_close(first.embeds, embeds, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(first.pooled, pooled, atol=1e-6, rtol=1e-6)


def test_text_conditions_carry_the_pooled_projection_through_guidance():
    cond = TextCondition(torch.randn(3, 5, 4), torch.ones(3, 5), torch.randn(3, 2))
    null = TextCondition(torch.zeros(1, 5, 4), torch.ones(1, 5), torch.full((1, 2), 7.0))
    assert torch.equal(cond.index(torch.tensor([2, 0])).pooled, cond.pooled[[2, 0]])
    assert torch.equal(cond.repeat_interleave(2).pooled, cond.pooled.repeat_interleave(2, 0))
    assert torch.equal(TextCondition.cat([cond, cond.to("cpu")]).pooled, torch.cat([cond.pooled] * 2))
    assert TextCondition.cat([TextCondition(cond.embeds, cond.mask)] * 2).pooled is None
    seen = []

    def F_fn(x, t, c):
        seen.append(c.pooled)
        return x * c.pooled[:, :1, None, None]

    out = guided_F(F_fn, torch.ones(3, 1, 2, 2), torch.zeros(3), cond, null, torch.full((3,), 2.0))
    assert torch.equal(seen[0][3:], torch.full((3, 2), 7.0))
    assert torch.allclose(out[:, 0, 0, 0], 7.0 + 2.0 * (cond.pooled[:, 0] - 7.0))


def test_a_guidance_distilled_teacher_is_refused(tmp_path):
    folder = save_tiny_flux_pipeline(tmp_path / "dev", guidance_embeds=True)
    with pytest.raises(UserError, match="guidance embedding") as info:
        load_bundle(folder, expect_kind="teacher", text_cache=None)
    assert "\n" not in str(info.value)


def test_distill_a_flux_teacher_end_to_end(flux_dir, teacher, tmp_path):
    from tbcm.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join([*PROMPTS, "a green bird", "a small house in the city"]) + "\n")
    out = tmp_path / "run"
    rc = main(["distill", "--out", str(out), f"teacher={flux_dir}", f"prompts={prompts}", "steps=2",
               "prompts_per_step=2", f"text_cache={tmp_path / 'cache'}", "preview.seeds=1", "preview.teacher_steps=2",
               "pairs.route_points=4", "sampler.tune_images=8"])
    assert rc == 0
    assert yaml.safe_load((out / "student" / "model.yaml").read_text())["family"] == "flux"
    student = load_bundle(out / "student", expect_kind="student", text_cache=None)
    assert student.meta.family == "flux" and student.logvar_head is not None
    trained = student.network.transformer.state_dict()
    initial = teacher.network.with_guidance_embed().transformer.state_dict()
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)
    cond = student.encoder.encode(PROMPTS)
    x_norm, _ = _inputs(4)
    with torch.no_grad():
        F = Student(student.network, student.meta.sigma_d, student.meta.timestep_scale)(
            x_norm, torch.full((2,), math.pi / 2), cond, torch.full((2,), 4.5))
        pixels = student.decode(-student.meta.sigma_d * F)
    assert pixels.shape == (2, 3, 16, 16) and bool(torch.isfinite(pixels).all())
    assert (out / "samples.png").is_file()


def test_a_bf16_flux_network_sees_tau_in_fp32(flux_dir):
    """Two flow times closer than bf16's resolution at 0.3 (2^-9) give different outputs: the time
    embedding gets the fp32 tau, not diffusers' cast to the latents' dtype."""
    net = load_teacher(flux_dir, text_cache=None, dtype="bf16").network
    enc = FluxPromptEncoder(flux_dir, cache_dir=None)
    cond = enc.encode(["a red car"]).apply(lambda z: z.to(torch.bfloat16))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    tau = torch.tensor([0.3])
    assert torch.tensor([0.3]).to(torch.bfloat16) == torch.tensor([0.3 + 2e-4]).to(torch.bfloat16)
    with torch.no_grad():
        a, b = net(x, tau, cond), net(x, tau + 2e-4, cond)
    assert not torch.equal(a, b)
    assert net._timestep_fp32 is None  # nothing left over for the next call
