"""`tbcm export` of FLUX and SD3 students (tiny random pipelines): the exported folder, loaded by
the stock pipeline class, generates the latents tbcm's own sampler does from the same noise at 1, 2
and 4 steps, re-noising draws included; SD3's folded guidance input equals the student's; a
student the stock scheduler cannot reproduce (fresh_noise < 1) is said to be so.

Re-noising draws. Neither pipeline hands ``generator`` to ``scheduler.step``: the scheduler draws
its fresh noise from torch's global generator, in the latents' layout. tbcm's sampler draws from
the global generator too when given none, so both sides are seeded alike with ``torch.manual_seed``;
FLUX's scheduler draws in the packed ``[B, (H/2)(W/2), 4C]`` layout, so on tbcm's side the test
draws the same numbers in that layout and unpacks them (:class:`PackedDraws`).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import FluxPipeline, SD3Transformer2DModel, StableDiffusion3Pipeline  # noqa: E402

import tbcm.sampling  # noqa: E402
from tbcm.cli import main  # noqa: E402
from tbcm.export import export_diffusers  # noqa: E402
from tbcm.models.bundle import Bundle, load_bundle, save_bundle  # noqa: E402
from tbcm.models.families.exporting import flow_sigmas  # noqa: E402
from tbcm.models.families.flux.network import pack_latents, unpack_latents  # noqa: E402
from tbcm.models.families.sd3.export import folded_time_text_embed  # noqa: E402
from tbcm.models.student import LogvarHead, Student  # noqa: E402
from tbcm.sampler import StudentSampler  # noqa: E402
from tests.models.families.tiny_diffusers import save_tiny_flux_pipeline  # noqa: E402
from tests.models.families.tiny_sd3 import save_tiny_sd3_pipeline  # noqa: E402

PROMPTS = ["a red cat", "a blue dog under the tree"]
# an explicit 4-step route beside the shifted 2-step one: the pipelines run any route
SAMPLER = StudentSampler(cfg_scale=3.0, shift=2.5, routes={4: [1.3, 0.8, 0.3]})


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux_pipeline(tmp_path_factory.mktemp("flux") / "pipe")


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return save_tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3") / "pipe", sd35=True)


def save_student(teacher_dir, folder, sampler: StudentSampler = SAMPLER, seed: int = 0):
    """A student folder as `tbcm distill` leaves one: the teacher's student network, its guidance
    embedder's zero output layer made random (so ``w`` matters), and ``sampler``."""
    teacher = load_bundle(teacher_dir, expect_kind="teacher", text_cache=None)
    network = teacher.network.with_guidance_embed()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in network.transformer.time_text_embed.guidance_embedder.linear_2.parameters():
            p.normal_(0, 0.05)
    meta = dataclasses.replace(teacher.meta, kind="student", network=network.config.to_dict(),
                               extra={"teacher": str(teacher_dir), "sampler": sampler.to_dict()})
    return save_bundle(Bundle(meta, network, teacher.encoder, LogvarHead()), folder)


def tbcm_latents(student_dir, steps: int, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """``tbcm sample``'s student and sampler, re-noising from the global generator seeded ``seed``:
    the flow latents ``x0 / sigma_d``."""
    bundle = load_bundle(student_dir, expect_kind="student", text_cache=None)
    student = Student.from_bundle(bundle).eval()
    sampler = StudentSampler.from_extra(bundle.meta.extra)
    cond = bundle.encoder.encode(PROMPTS)
    torch.manual_seed(seed)
    return sampler.sample(student, cond, noise, steps) / bundle.meta.sigma_d


class PackedDraws:
    """``torch`` for :mod:`tbcm.sampling`, except that ``randn([B, C, H, W])`` draws the numbers
    FluxPipeline's scheduler draws -- ``randn([B, (H/2)(W/2), 4C])`` -- and unpacks them."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(shape, generator=None, dtype=None):
        b, c, h, w = shape
        return unpack_latents(torch.randn(b, (h // 2) * (w // 2), 4 * c, generator=generator, dtype=dtype), h, w)


def test_a_flux_student_runs_in_a_stock_flux_pipeline(flux_dir, tmp_path, monkeypatch):
    student_dir = save_student(flux_dir, tmp_path / "student")
    out, note = export_diffusers(student_dir, tmp_path / "export")
    assert "FluxPipeline.from_pretrained" in note and "note:" not in note  # fresh noise: nothing to say
    record = json.loads((out / "tbcm_sampling.json").read_text())
    assert record["pipeline"] == "FluxPipeline" and record["notes"] == []
    assert record["guidance_scale"] == record["guidance_input"] == 3.0
    pipe = FluxPipeline.from_pretrained(str(out), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.guidance_embeds and pipe.scheduler.config.stochastic_sampling

    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    previous = None
    for n in (1, 2, 4):
        call = record["call"][str(n)]
        assert call["guidance_scale"] == 3.0 and call["height"] == call["width"] == 16
        assert call["sigmas"] == flow_sigmas(SAMPLER.angles(n)) and call["sigmas"][0] == 1.0
        assert record["angles"][str(n)] == record["tbcm_angles"][str(n)] == SAMPLER.angles(n)
        torch.manual_seed(100 + n)
        packed = pipe(PROMPTS, latents=pack_latents(noise), output_type="latent", **call).images
        # the scheduler ran the route's flow times, unshifted, then 0
        torch.testing.assert_close(pipe.scheduler.sigmas, torch.tensor([*call["sigmas"], 0.0]))
        theirs = unpack_latents(packed, 8, 8)
        with monkeypatch.context() as m:
            m.setattr(tbcm.sampling, "torch", PackedDraws())
            ours = tbcm_latents(student_dir, n, noise, seed=100 + n)
        assert float(ours.abs().mean()) > 0.1
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
        if previous is not None:
            assert float((ours - previous).abs().max()) > 1e-2  # each step count ran something else
        previous = ours
    # the guidance input reaches the student through the pipeline's guidance_scale
    other = pipe(PROMPTS, latents=pack_latents(noise), output_type="latent", **{**record["call"]["1"],
                                                                              "guidance_scale": 1.0}).images
    assert float((unpack_latents(other, 8, 8) - tbcm_latents(student_dir, 1, noise, 0)).abs().max()) > 1e-3


def test_the_folded_sd3_time_embedding_is_the_students_at_its_guidance_scale(sd3_dir, tmp_path):
    student_dir = save_student(sd3_dir, tmp_path / "student")
    guided = load_bundle(student_dir, expect_kind="student", text_cache=None).network.transformer.time_text_embed
    timestep, pooled = torch.tensor([1000.0, 412.5, 3.0]), torch.randn(3, 24)
    bias = guided.timestep_embedder.linear_2.bias.detach().clone()
    plain = folded_time_text_embed(guided, 3.0)
    assert type(plain).__name__ == "CombinedTimestepTextProjEmbeddings" and plain.text_embedder is guided.text_embedder
    with torch.no_grad():
        guided.guidance = torch.full((3,), 3.0)
        expected = guided(timestep, pooled)
        guided.guidance = torch.full((3,), 1.0)
        at_one = guided(timestep, pooled)
        guided.guidance = None
        torch.testing.assert_close(plain(timestep, pooled), expected, rtol=1e-6, atol=1e-6)
    assert float((expected - at_one).abs().max()) > 1e-3  # the guidance input matters
    # the fold changes a copy: the student's own embedder is left as it was
    assert torch.equal(guided.timestep_embedder.linear_2.bias, bias)
    assert not torch.equal(plain.timestep_embedder.linear_2.bias, bias)


def test_an_sd3_student_runs_in_a_stock_sd3_pipeline(sd3_dir, tmp_path, capsys):
    student_dir = save_student(sd3_dir, tmp_path / "student")
    out = tmp_path / "export"
    assert main(["export", str(student_dir), "--format", "diffusers", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "StableDiffusion3Pipeline.from_pretrained" in printed and "w=3" in printed
    record = json.loads((out / "tbcm_sampling.json").read_text())
    assert record["pipeline"] == "StableDiffusion3Pipeline" and record["guidance_input"] == 3.0
    assert record["guidance_scale"] == 1.0  # no CFG in the pipeline: the guidance is in the weights
    assert len(record["notes"]) == 1 and "folded" in record["notes"][0]
    pipe = StableDiffusion3Pipeline.from_pretrained(str(out), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.transformer) is SD3Transformer2DModel
    assert not any("guidance" in k for k in pipe.transformer.state_dict())

    noise = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    for n in (1, 2, 4):
        call = record["call"][str(n)]
        assert call["guidance_scale"] == 1.0 and call["sigmas"] == flow_sigmas(SAMPLER.angles(n))
        torch.manual_seed(200 + n)
        theirs = pipe(PROMPTS, latents=noise.clone(), output_type="latent", **call).images
        assert not pipe.do_classifier_free_guidance
        torch.testing.assert_close(pipe.scheduler.sigmas, torch.tensor([*call["sigmas"], 0.0]))
        ours = tbcm_latents(student_dir, n, noise, seed=200 + n)
        assert float(ours.abs().mean()) > 0.1
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_a_student_with_partial_fresh_noise_is_exported_with_a_note(flux_dir, tmp_path):
    """The stock scheduler re-noises with fresh noise only: a fresh_noise=0.5 student's 2- and 4-step
    images differ from tbcm sample's, and the note and tbcm_sampling.json say so."""
    student_dir = save_student(flux_dir, tmp_path / "student", SAMPLER.overridden(fresh_noise=0.5))
    out, note = export_diffusers(student_dir, tmp_path / "export")
    assert "note: this student re-noises with fresh_noise=0.5" in note and "\n" not in note
    record = json.loads((out / "tbcm_sampling.json").read_text())
    assert record["fresh_noise"] == 0.5 and record["pipeline_fresh_noise"] == 1.0
    assert len(record["notes"]) == 1 and "fresh_noise=0.5" in record["notes"][0]
    assert record["sampler"]["fresh_noise"] == 0.5


def test_flow_sigmas_are_the_flow_times_of_the_angles():
    angles = [math.pi / 2, math.atan(2.5), 0.3, 0.0]
    sigmas = flow_sigmas(angles)
    assert sigmas[0] == 1.0 and len(sigmas) == 3
    assert sigmas[1] == pytest.approx(2.5 / 3.5)  # tan t = s / (1 - s)
    assert sigmas[2] == pytest.approx(math.tan(0.3) / (1 + math.tan(0.3)))
