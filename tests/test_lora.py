"""LoRA students (student.lora_rank): the teacher's weights held once, only the adapters and the
student's own modules train, the JVP runs through the adapters, and the saved adapters are what
peft and diffusers read."""

from __future__ import annotations

import pytest
import torch

from tbcm.checkpoint import list_checkpoints, load_checkpoint
from tbcm.cli import main
from tbcm.config import DistillConfig, load_config
from tbcm.errors import UserError
from tbcm.models import lora
from tbcm.models.bundle import load_bundle
from tbcm.models.student import Student
from tbcm.objectives.scm import jvp_autograd
from tbcm.train import Distiller
from tbcm.train.outputs import save_student

from tests.conftest import assert_cli_error

pytest.importorskip("peft")

FAST = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "optim.warmup_steps=0", "threads=1"]


def _distiller(teacher, *extra, prompts=None):
    more = [] if prompts is None else [f"prompts={prompts}", "text_cache=none"]
    return Distiller(load_config(DistillConfig, None, [f"teacher={teacher}", *FAST, *more, *extra]))


def _perturb_adapters(student: Student, seed: int = 0) -> None:
    """Random adapters and full modules, so a test sees a student that differs from the teacher."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if p.requires_grad and "logvar" not in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p))


def _base_pairs(d: Distiller):
    """``(student parameter, teacher parameter)`` of every frozen base weight."""
    teacher = dict(d.teacher_bundle.network.named_parameters())
    to_teacher = getattr(d.student.network, "teacher_key", lambda n: n)
    for name, p in d.student.network.named_parameters():
        if not p.requires_grad:
            yield name, p, teacher[to_teacher(name.replace(".base_layer.", "."))]


def test_the_base_weights_are_the_teachers_storage_and_only_adapters_and_extras_train(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir, "student.lora_rank=4")
    pairs = list(_base_pairs(d))
    assert len(pairs) == len(dict(d.teacher_bundle.network.named_parameters()))  # every teacher weight is shared
    for name, s, t in pairs:
        assert s.untyped_storage().data_ptr() == t.untyped_storage().data_ptr(), name
    trainable = {n for n, p in d.student.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith(("F.net.guidance_embed.", "logvar_head.")) for n in trainable)
    assert any(n.startswith("F.net.guidance_embed.") for n in trainable)  # the guidance input trains in full
    assert {id(p) for g in d.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in d.student.parameters() if p.requires_grad}
    assert set(d.ema.shadow) == trainable

    teacher_before = [p.clone() for p in d.teacher.parameters()]
    d.train_step()
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, d.teacher.parameters()))  # the base stays frozen
    state = d.state_dict()
    assert set(state["student"]) == set(state["ema"]) == trainable  # no base weight in a checkpoint
    # the copies the run makes (EMA student, fake score) sit on the same base
    sampling = d.student_for_sampling()
    for (_, s, t), c in zip(pairs, (p for p in sampling.network.parameters() if not p.requires_grad)):
        assert c.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()


def _held(d: Distiller) -> tuple[int, int]:
    return lora.held_bytes(d.teacher_bundle.network, d.student)


def test_memory_of_teacher_and_student_full_and_lora(capsys):
    """The embedded digits teacher: a full student doubles the weights held, a LoRA one adds its
    adapters and guidance embedder only."""
    d = _distiller("builtin")
    full, small = _held(d), _held(_distiller("builtin", "student.lora_rank=8"))
    teacher = lora.held_bytes(d.teacher_bundle.network)
    with capsys.disabled():
        for what, (n, b) in (("teacher alone", teacher), ("teacher + full student", full),
                             ("teacher + LoRA r=8 student", small)):
            print(f"\n  {what:28s} {n:>10,d} parameters {b / 2**20:8.2f} MiB", end="")
        print()
    assert full[0] > 2 * teacher[0] - 1 and small[0] < 1.5 * teacher[0]
    assert small[1] < 0.6 * full[1]


def _jvp_against_finite_differences(student: Student, x, t, cond, w, steps) -> tuple[list[float], float]:
    """Relative errors of the JVP (``torch.func.jvp``) against central differences at two steps,
    and how much the JVP changes when the adapters are zeroed (they are on the path)."""
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    fn = lambda xx, tt: student(xx, tt, cond, w)  # noqa: E731
    out, dout = jvp_autograd(fn, (x, t), (u, torch.ones_like(t)))
    with torch.no_grad():
        torch.testing.assert_close(out, fn(x, t), rtol=1e-12, atol=1e-12)  # the primal is the forward
        errors = []
        for h in steps:
            fd = (fn(x + h * u, t + h) - fn(x - h * u, t - h)) / (2 * h)
            errors.append(float((dout - fd).norm() / dout.norm()))
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.zero_()
    _, d0 = jvp_autograd(fn, (x, t), (u, torch.ones_like(t)))
    return errors, float((d0 - dout).norm() / dout.norm())


def test_jvp_through_the_adapters_matches_finite_differences(tiny_teacher_dir):
    """In float64 with random adapters and guidance embedder: forward-mode AD through the peft
    layers against central differences."""
    d = _distiller(tiny_teacher_dir, "student.lora_rank=4")
    student = Student(lora.copy_network(d.student.network), d.sigma_d, 1000.0)
    _perturb_adapters(student)
    student = student.double()
    torch.manual_seed(0)
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0.4, 1.1], dtype=torch.float64)
    cond = d.encoder.encode(["a handwritten digit 3", "a digit"]).apply(lambda z: z.double())
    # small steps: the built-in time embedding's 1000-tau sinusoids curve fast
    errors, adapters_matter = _jvp_against_finite_differences(student, x, t, cond, torch.tensor([1.5, 3.0]).double(),
                                                              (1e-5, 1e-6))
    assert errors[-1] < 1e-6 and errors[-1] < errors[0], errors  # O(h^2): the error shrinks with h
    assert adapters_matter > 1e-3


def test_jvp_through_sana_adapters_on_linear_and_conv_layers(tmp_path):
    """Sana's adapters sit on Linear layers and the MLP's 1x1 convolutions; the JVP runs through both."""
    pytest.importorskip("diffusers")
    from tests.models.families.tiny_diffusers import save_tiny_sana_pipeline

    bundle = load_bundle(save_tiny_sana_pipeline(tmp_path / "sana"), text_cache=None)
    net = lora.student_network(bundle.network, lora.StudentConfig(lora_rank=4))
    assert any(isinstance(net.get_submodule(m).get_base_layer(), torch.nn.Conv2d) for m in net.lora_spec.modules)
    student = Student(net, bundle.meta.sigma_d, bundle.meta.timestep_scale)
    _perturb_adapters(student)
    student = student.double()
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 16, 16, dtype=torch.float64), torch.tensor([0.4, 1.1], dtype=torch.float64)
    cond = bundle.encoder.encode(["a photo of a cat", "red car"]).apply(lambda z: z.double())
    errors, adapters_matter = _jvp_against_finite_differences(student, x, t, cond, torch.tensor([1.5, 3.0]).double(),
                                                              (1e-2, 1e-3, 1e-4))
    # Sana's linear attention takes ReLU features, whose kinks give central differences an O(h)
    # error, and diffusers computes the time features in float32: the quotient converges slowly,
    # but it converges to the JVP, and a JVP that missed the adapters would be off by far more
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3, errors
    assert adapters_matter > 10 * errors[2], (adapters_matter, errors)


def test_a_builtin_lora_student_saves_as_peft_adapters_and_loads_back(tiny_teacher_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    d = _distiller(tiny_teacher_dir, "student.lora_rank=4", "student.lora_alpha=8")
    _perturb_adapters(d.student)
    folder = save_student(d, d.student, tmp_path / "student")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "logvar_head.safetensors", "model.yaml",
        "trained_in_full.safetensors"]
    torch.manual_seed(1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 1.2])
    cond, w = d.encoder.encode(["a handwritten digit 1", "a digit 7"]), torch.tensor([2.0, 4.0])
    with torch.no_grad():
        expected = d.student(x, t, cond, w)
        # tbcm sample / eval: the folder through load_bundle, the base from the teacher folder
        bundle = load_bundle(folder, expect_kind="student")
        assert bundle.meta.lora["rank"] == 4 and bundle.meta.lora["alpha"] == 8.0
        assert torch.allclose(Student.from_bundle(bundle)(x, t, cond, w), expected, atol=1e-6)
        # peft itself: the teacher's network with the guidance input, the full modules, then the adapters
        plain = load_bundle(tiny_teacher_dir).network.with_guidance_embed()
        missing, unexpected = plain.load_state_dict(load_file(str(folder / lora.FULL_FILE)), strict=False)
        assert not unexpected and all(not k.startswith("guidance_embed.") for k in missing)
        adapted = PeftModel.from_pretrained(plain, str(folder))
        got = Student(adapted, d.sigma_d, 1000.0, bundle.logvar_head)(x, t, cond, w)
    assert torch.allclose(got, expected, atol=1e-6)


FAMILIES = ("sana", "flux", "sd3")


def _family_teacher(family: str, folder):
    pytest.importorskip("diffusers")
    if family == "sana":
        from tests.models.families.tiny_diffusers import save_tiny_sana_pipeline

        return save_tiny_sana_pipeline(folder)
    if family == "flux":
        from tests.models.families.tiny_diffusers import save_tiny_flux_pipeline

        return save_tiny_flux_pipeline(folder)
    from tests.models.families.tiny_sd3 import save_tiny_sd3_pipeline

    return save_tiny_sd3_pipeline(folder)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a photo of a cat\na red car on the house\nblue sky with sun\n")
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_reads_the_saved_adapters(family, tmp_path, prompts_file, one_thread):
    """The student folder's ``pytorch_lora_weights.safetensors`` loaded by diffusers'
    ``load_lora_adapter`` into a fresh student transformer (the teacher's weights, the saved full
    modules) computes the student; ``load_lora_weights`` puts the same adapters on the pipeline's
    own (teacher) transformer."""
    import diffusers
    from safetensors.torch import load_file

    teacher_dir = _family_teacher(family, tmp_path / "teacher")
    d = _distiller(teacher_dir, "student.lora_rank=4", "student.lora_alpha=2", prompts=prompts_file)
    _perturb_adapters(d.student)
    folder = save_student(d, d.student, tmp_path / "student")
    assert (folder / lora.DIFFUSERS_FILE).is_file() and (folder / lora.FULL_FILE).is_file()
    assert not (folder / "transformer").exists()  # no full network in the folder

    c, s = d.image_shape[0], d.image_shape[1]
    torch.manual_seed(1)
    x, t = torch.randn(2, c, s, s), torch.tensor([0.3, 1.2])
    cond, w = d.encoder.encode(["a photo of a cat", "red car"]), torch.tensor([2.0, 4.0])
    with torch.no_grad():
        expected = d.student(x, t, cond, w)
        fresh = d.teacher_bundle.network.with_guidance_embed()
        fresh.load_state_dict(load_file(str(folder / lora.FULL_FILE)), strict=False)
        fresh.transformer.load_lora_adapter(str(folder), weight_name=lora.DIFFUSERS_FILE, prefix="transformer")
        got = Student(fresh, d.sigma_d, d.teacher_bundle.meta.timestep_scale)(x, t, cond, w)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        loaded = Student.from_bundle(load_bundle(folder, expect_kind="student", text_cache=None))
        torch.testing.assert_close(loaded(x, t, cond, w), expected, rtol=1e-5, atol=1e-5)

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(teacher_dir))
    pipe.load_lora_weights(str(folder))
    ours = d.student.network
    for name in ours.lora_spec.modules:
        mine = ours.get_submodule(name)
        theirs = pipe.transformer.get_submodule(name.removeprefix("transformer."))
        adapter = next(iter(theirs.lora_A))
        assert theirs.scaling[adapter] == mine.scaling[lora.ADAPTER] == 0.5
        for part in ("lora_A", "lora_B"):
            assert torch.equal(getattr(theirs, part)[adapter].weight, getattr(mine, part)[lora.ADAPTER].weight)


def test_a_bf16_teacher_shares_bf16_weights_with_fp32_adapters_and_extras(tmp_path, prompts_file, one_thread):
    """``teacher_dtype=bf16``: the base is held once in bf16; adapters and the guidance embedder
    are fp32 master weights, cast around where the bf16 network runs them."""
    teacher_dir = _family_teacher("sana", tmp_path / "teacher")
    d = _distiller(teacher_dir, "student.lora_rank=4", "teacher_dtype=bf16", "start_check_max_error=0",
                   prompts=prompts_file)
    dtypes = {(p.requires_grad, p.dtype) for p in d.student.network.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    for name, s, t in _base_pairs(d):
        assert s.untyped_storage().data_ptr() == t.untyped_storage().data_ptr(), name
    _perturb_adapters(d.student)
    stats = d.train_step()
    assert stats["skipped"] == 0 and torch.isfinite(torch.tensor(stats["loss"]))


def test_distill_then_sample_a_lora_student_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--out", str(out), "--config", "configs/distill_digits.yaml", "--no-progress",
                 "steps=2", "student.lora_rank=8", *FAST, "preview.seeds=1", "preview.teacher_steps=2",
                 "preview.student_steps=[1]"]) == 0
    meta = (out / "student" / "model.yaml").read_text()
    assert "lora:" in meta and "rank: 8" in meta and "base: builtin" in meta
    ckpt = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert all(".lora_" in k or "guidance_embed" in k or "logvar" in k for k in ckpt["student"])
    assert main(["sample", "--student", str(out), "--prompt", "a handwritten digit 3", "--steps", "2",
                 "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()
    # resuming keeps the adapters: a checkpoint without base weights loads onto the teacher's
    assert main(["distill", "--resume", str(out), "--no-progress", "steps=3"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("overrides,needle", [
    (["student.lora_rank=-1"], "student.lora_rank=-1"),
    (["student.lora_targets=[to_q]"], "set student.lora_rank too"),
    (["student.lora_rank=4", "student.lora_targets=['(']"], "a list of regular expressions"),
    (["student.lora_rank=4", "student.lora_alpha=-1"], "student.lora_alpha"),
])
def test_bad_lora_settings_are_one_line_errors(overrides, needle, capsys):
    assert needle in assert_cli_error(["distill", "--out", "unused", *overrides], capsys)


def test_targets_that_match_no_layer_are_refused_before_training(tiny_teacher_dir):
    with pytest.raises(UserError, match=r"match no Linear / Conv2d layer .* e\.g\. "):
        _distiller(tiny_teacher_dir, "student.lora_rank=4", "student.lora_targets=[to_q]")


def test_sana_export_merges_the_adapters_and_leaves_the_shared_base_alone(tmp_path, prompts_file, one_thread):
    """``tbcm export`` of a LoRA Sana student: a SanaSprintPipeline whose transformer is the
    student with its adapters merged in; merging never writes into the teacher's storage."""
    from diffusers import SanaSprintPipeline

    from tbcm.export import export_diffusers
    from tbcm.models.families.sana.network import SanaVelocityNet

    teacher_dir = _family_teacher("sana", tmp_path / "teacher")
    d = _distiller(teacher_dir, "student.lora_rank=4", prompts=prompts_file)
    _perturb_adapters(d.student)
    teacher_before = [p.clone() for p in d.teacher.parameters()]
    merged = lora.merged(d.student.network)
    assert lora.lora_spec(merged) is None and not any(".lora_" in n for n, _ in merged.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, d.teacher.parameters()))

    folder = save_student(d, d.student, tmp_path / "student")
    export_diffusers(folder, tmp_path / "export")
    pipe = SanaSprintPipeline.from_pretrained(str(tmp_path / "export"))
    torch.manual_seed(1)
    x, tau = torch.randn(2, 4, 16, 16), torch.tensor([0.3, 0.8])
    cond, w = d.encoder.encode(["a photo of a cat", "red car"]), torch.tensor([2.0, 4.0])
    with torch.no_grad():
        expected = d.student.network(x, tau, cond, guidance=w)
        torch.testing.assert_close(merged(x, tau, cond, guidance=w), expected, rtol=1e-5, atol=1e-5)
        got = SanaVelocityNet(pipe.transformer, 1.0)(x, tau, cond, guidance=w)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_sana_student_without_refit_shares_the_moved_timestep_mlp(tmp_path):
    """A dense-time (Sana-Sprint-style) teacher: the student's time MLP is the teacher's under
    another name (``teacher_key``), so it is shared too; only the guidance embedder trains in full."""
    pytest.importorskip("diffusers")
    from tests.models.families.tiny_diffusers import save_tiny_sana_pipeline

    bundle = load_bundle(save_tiny_sana_pipeline(tmp_path / "sprint", sprint_style=True), text_cache=None)
    net = lora.student_network(bundle.network, lora.StudentConfig(lora_rank=2))
    assert all(n.startswith("transformer.time_embed.guidance_embedder.") for n in net.lora_spec.full)
    shared = net.transformer.time_embed.timestep_embedder.linear_1.weight
    teacher = bundle.network.transformer.time_embed.emb.timestep_embedder.linear_1.weight
    assert shared.untyped_storage().data_ptr() == teacher.untyped_storage().data_ptr()


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_lora_flux_or_sd3_student_exports_whole_into_the_stock_pipeline(family, tmp_path, prompts_file, one_thread):
    """``tbcm export`` of a LoRA FLUX / SD3 student: the stock pipeline folder holds the student with
    its adapters merged (its guidance embedder is trained in full, which no LoRA file carries), and
    at 1 step the pipeline makes the latents tbcm's own sampler does."""
    import json

    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    from tbcm.export import export_diffusers
    from tbcm.models.families.flux.network import pack_latents, unpack_latents
    from tests.models.families.test_export_families import PROMPTS, tbcm_latents

    teacher_dir = _family_teacher(family, tmp_path / "teacher")
    d = _distiller(teacher_dir, "student.lora_rank=4", prompts=prompts_file)
    _perturb_adapters(d.student)
    folder = save_student(d, d.student, tmp_path / "student")
    out, _ = export_diffusers(folder, tmp_path / "export")
    call = json.loads((out / "tbcm_sampling.json").read_text())["call"]["1"]
    c, s = d.image_shape[0], d.image_shape[1]
    noise = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0))
    ours = tbcm_latents(folder, 1, noise, seed=0)
    plain = tbcm_latents(_plain_copy(folder, tmp_path / "plain"), 1, noise, seed=0)
    assert float((ours - plain).abs().max()) > 1e-3  # the adapters change the student
    if family == "flux":
        pipe = FluxPipeline.from_pretrained(str(out), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        theirs = unpack_latents(pipe(PROMPTS, latents=pack_latents(noise), output_type="latent", **call).images, s, s)
    else:
        pipe = StableDiffusion3Pipeline.from_pretrained(str(out), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe(PROMPTS, latents=noise, output_type="latent", **call).images
    assert not any(".lora_" in n for n, _ in pipe.transformer.named_parameters())
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def _plain_copy(folder, dest):
    """The same student folder with its adapters zeroed (the teacher's layers, the student's extras)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    path = dest / lora.DIFFUSERS_FILE
    save_file({k: torch.zeros_like(v) for k, v in load_file(str(path)).items()}, str(path))
    return dest
