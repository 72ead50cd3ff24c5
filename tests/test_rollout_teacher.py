"""The rollout's teacher: CFG in one batched network call, the bf16 / compile options, their
fallbacks, and bit-identical results with both off."""

import warnings

import pytest
import torch

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.errors import UserError
from tbcm.models.bundle import load_bundle
from tbcm.models.teacher import Teacher
from tbcm.pairs.prompts import PromptSampler
from tbcm.pairs.rollout_teacher import RolloutTeacher, rollout_teacher
from tbcm.pairs.trajectory import TrajectoryConfig, TrajectoryPairSource

from .conftest import assert_close_to_scale

K, P = 5, 3


def _teacher(teacher_dir):
    return Teacher.from_bundle(load_bundle(str(teacher_dir), expect_kind="teacher"))


def _pairs(teacher, rollout, seed=0):
    """One rollout of P prompts through ``rollout`` (the teacher the source calls)."""
    conds = teacher.encoder.encode([f"a handwritten digit {d}" for d in range(10)])
    source = TrajectoryPairSource(rollout, conds, [1.0, 4.0], (1, 8, 8), TrajectoryConfig(route_points=K),
                                  generator=torch.Generator().manual_seed(seed), prompts=PromptSampler(10, seed=0))
    return source.next_pairs(P)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in ((a.x_t, b.x_t), (a.u, b.u), (a.t, b.t), (a.w, b.w)))


def test_cfg_is_one_batched_call_per_route_point_and_equals_two_separate_passes(tiny_teacher_dir):
    teacher = _teacher(tiny_teacher_dir)
    calls = []
    hook = teacher.F.net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    pairs = _pairs(teacher, teacher)
    hook.remove()
    assert calls == [2 * P] * K  # K calls, each cond + null of all P prompts at once
    # the guided velocity from two separate passes: sd * (F_null + w (F_cond - F_null))
    sd, x = teacher.sigma_d, pairs.x_t / teacher.sigma_d
    f_cond = teacher.F(x, pairs.t, pairs.cond)
    f_null = teacher.F(x, pairs.t, teacher.null_cond.apply(lambda z: z.expand(len(pairs), *z.shape[1:])))
    assert_close_to_scale(pairs.u, sd * (f_null + pairs.w[:, None, None, None] * (f_cond - f_null)))


def test_options_off_are_bit_identical_to_the_plain_teacher(tiny_teacher_dir):
    teacher = _teacher(tiny_teacher_dir)
    assert rollout_teacher(teacher, "fp32", False) is teacher
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        wrapped = _pairs(teacher, RolloutTeacher(teacher, "fp32", compile=False))
    assert _same(wrapped, _pairs(teacher, teacher))


def test_bf16_rollout_stays_float32_and_close_to_the_fp32_rollout(tiny_teacher_dir):
    teacher = _teacher(tiny_teacher_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # CPU autocast has bf16: no fallback here
        low = _pairs(teacher, RolloutTeacher(teacher, "bf16"))
    ref = _pairs(teacher, teacher)
    assert low.x_t.dtype == low.u.dtype == torch.float32
    assert not torch.equal(low.u, ref.u)  # the forward really ran in bf16 ...
    assert_close_to_scale(low.u, ref.u, rel=5e-2)  # ... and bf16 keeps ~3 significant digits
    assert torch.equal(low.t, ref.t)  # same draws: routes, scales and noise do not depend on it


def test_bf16_falls_back_to_fp32_with_one_warning(tiny_teacher_dir, monkeypatch):
    teacher = _teacher(tiny_teacher_dir)
    ref = _pairs(teacher, teacher)
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.warns(RuntimeWarning, match="autocast is not available on cpu") as record:
        assert _same(_pairs(teacher, RolloutTeacher(teacher, "bf16")), ref)
    assert len(record) == 1
    monkeypatch.undo()

    real_forward = teacher.F.net.forward

    def no_bf16_kernel(*args, **kwargs):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError('"addmm" not implemented for BFloat16')
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(teacher.F.net, "forward", no_bf16_kernel)
    with pytest.warns(RuntimeWarning, match="bf16 forward failed") as record:
        assert _same(_pairs(teacher, RolloutTeacher(teacher, "bf16")), ref)
    assert len(record) == 1


def test_compile_failures_fall_back_to_eager_with_one_warning(tiny_teacher_dir, monkeypatch):
    teacher = _teacher(tiny_teacher_dir)
    ref = _pairs(teacher, teacher)

    def unavailable(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .Dynamo is not supported") as record:
        assert _same(_pairs(teacher, RolloutTeacher(teacher, compile=True)), ref)
    assert len(record) == 1

    def fails_when_called(module, **kwargs):  # compiles lazily, fails on the first call (no C++ compiler)
        def call(*args):
            raise RuntimeError("InductorError: CppCompileError")
        return call

    monkeypatch.setattr(torch, "compile", fails_when_called)
    with pytest.warns(RuntimeWarning, match="CppCompileError") as record:
        assert _same(_pairs(teacher, RolloutTeacher(teacher, compile=True)), ref)
    assert len(record) == 1  # once, not once per call of the rollout's K


def test_a_genuine_error_is_not_swallowed(tiny_teacher_dir, monkeypatch):
    teacher = _teacher(tiny_teacher_dir)

    def broken(*args, **kwargs):
        raise ValueError("shape mismatch")

    monkeypatch.setattr(teacher.F.net, "forward", broken)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="shape mismatch"):
        _pairs(teacher, RolloutTeacher(teacher, "bf16", compile=True))


def test_compiled_rollout_traces_and_matches_eager(tiny_teacher_dir, monkeypatch):
    real_compile = torch.compile
    # dynamo's trace run by its eager backend: the real torch.compile path without a C++ build
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real_compile(module, backend="eager", **kw))
    teacher = _teacher(tiny_teacher_dir)
    rollout = RolloutTeacher(teacher, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled = _pairs(teacher, rollout)
    assert rollout.compiled is not None
    assert_close_to_scale(compiled.u, _pairs(teacher, teacher).u)


@pytest.mark.parametrize("overrides,needle", [
    (["pairs.rollout_dtype=float16"], "pairs.rollout_dtype='float16': it must be one of fp32, bf16"),
    (["pairs.rollout_compile=maybe"], "pairs.rollout_compile"),
    (["source=teacher_x0", "pairs.rollout_dtype=bf16"], "with source=teacher_x0"),
])
def test_rollout_options_are_validated_on_load(overrides, needle):
    with pytest.raises(UserError) as exc:
        load_config(DistillConfig, None, overrides)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_distiller_rolls_out_through_the_options_and_trains(tiny_teacher_dir):
    cfg = load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "prompts_per_step=2", "pairs.route_points=4",
                                            "pairs.pool_prompts=4", "pairs.rollout_dtype=bf16"])
    d = Distiller(cfg)
    assert isinstance(d.source.inner.teacher, RolloutTeacher) and d.source.inner.teacher.bf16
    before = [p.detach().clone() for p in d.student.parameters()]
    assert d.train_step()["skipped"] == 0  # no_grad pairs feed the gradient step (inference tensors could not)
    assert any(not torch.equal(a, b) for a, b in zip(before, d.student.parameters()))
    default = Distiller(load_config(DistillConfig, None, [f"teacher={tiny_teacher_dir}", "pairs.pool_prompts=0"]))
    assert default.source.teacher is default.teacher  # options off: the plain teacher itself
