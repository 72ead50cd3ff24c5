"""The student's sampler object: its angles, its overrides, and the one reading of a saved student."""

import math

import pytest
import torch

from tbcm.errors import UserError
from tbcm.sampler import StudentSampler
from tbcm.trigflow import official_reference_route


def test_angles_follow_the_shift_unless_a_route_is_given():
    s = StudentSampler(shift=2.5, routes={4: [0.9, 0.5, 0.2]})
    assert s.angles(1) == [math.pi / 2, 0.0]
    assert s.angles(2)[1] == pytest.approx(math.atan(2.5))  # the 2-step middle angle is arctan(shift)
    assert s.angles(4) == [math.pi / 2, 0.9, 0.5, 0.2, 0.0]
    shifted = s.overridden(shift=1.0)  # a shift alone asks for the shifted route at every count
    assert shifted.routes == {} and shifted.angles(2)[1] == pytest.approx(math.pi / 4)
    assert s.routes == {4: [0.9, 0.5, 0.2]}  # the original is untouched


def test_saved_and_read_back_through_plain_data():
    s = StudentSampler(cfg_scale=3, shift=0.25, fresh_noise=0.5, routes={4: [0.26, 0.25, 0.24]},
                       cfg_scales=[1, 2, 3], guidance_interval=[0, 0.5], teacher_route_points=8)
    data = s.to_dict()
    assert data["routes"] == {"4": [0.26, 0.25, 0.24]}
    assert StudentSampler.from_extra({"sampler": data}) == s


def test_a_student_saved_before_the_object_reads_its_old_keys():
    old = {"default_cfg_scale": 3.0, "shift": 0.25, "teacher_shift": 2.5, "fresh_noise": 0.5,
           "routes": {"4": [0.26, 0.25, 0.24]}, "cfg_scales": [1.0, 2.0, 3.0], "guidance_interval": [0.0, 0.5]}
    s = StudentSampler.from_extra(old)
    assert (s.cfg_scale, s.shift, s.fresh_noise, s.routes[4]) == (3.0, 0.25, 0.5, [0.26, 0.25, 0.24])
    assert s.guidance_interval == [0.0, 0.5] and s.cfg_scales == [1.0, 2.0, 3.0]
    bare = StudentSampler.from_extra({})  # the oldest students: fresh noise, the teacher's shift, w = 4.5
    assert (bare.cfg_scale, bare.shift, bare.fresh_noise, bare.routes) == (4.5, 2.5, 1.0, {})


@pytest.mark.parametrize("bad", [{"fresh_noise": 1.5}, {"shift": 0.0}, {"cfg_scale": -1},
                                 {"routes": {3: [0.2, 0.5]}}])
def test_bad_settings_are_one_line_errors(bad):
    with pytest.raises(UserError):
        StudentSampler(**bad)
    with pytest.raises(UserError, match="newer tbcm"):
        StudentSampler.from_dict({"cfg_scale": 1.0, "future_knob": 2})


def test_teacher_route_is_the_official_reference_route():
    s = StudentSampler(teacher_route_points=16, teacher_route_shift=2.5)
    assert torch.equal(s.teacher_route(), official_reference_route(16, 2.5))


def test_one_step_sample_is_the_consistency_function_at_pi_over_2():
    class Linear(torch.nn.Module):  # F(x/sigma_d) = 0.3 x/sigma_d: x0 = cos(pi/2) x - sin(pi/2) sigma_d F = -0.3 noise sigma_d
        sigma_d = 0.5

        def forward(self, x, t, cond, w):
            return 0.3 * x

    noise = torch.randn(3, 1, 4, 4)
    x0 = StudentSampler().sample(Linear(), None, noise, steps=1)
    torch.testing.assert_close(x0, -0.3 * 0.5 * noise, atol=1e-6, rtol=1e-6)


# -- everything that draws images reads the student's sampler -------------------------------------

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tbcm.cli import main  # noqa: E402
from tbcm.grids import grid_image  # noqa: E402
from tbcm.models.bundle import Bundle, ModelMeta, load_bundle, save_bundle  # noqa: E402
from tbcm.models.student import LogvarHead, Student  # noqa: E402
from tbcm.sampling import student_sample, to_pixels  # noqa: E402

from .conftest import assert_cli_error, tiny_encoder, tiny_network  # noqa: E402

PROMPTS = ["a handwritten digit 3", "a handwritten digit 7"]
#: a student saved with the sampler object; the older keys beside it say otherwise and must lose
SAVED = StudentSampler(cfg_scale=3.0, shift=1.0, fresh_noise=0.5, routes={2: [0.4], 3: [0.9, 0.3]})
OLD_KEYS = {"default_cfg_scale": 1.0, "shift": 2.5, "fresh_noise": 1.0, "routes": {}}


def _student_dir(path, extra: dict):
    net, enc = tiny_network(guidance=True, seed=1), tiny_encoder()
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config(), extra=extra)
    return save_bundle(Bundle(meta, net, enc, LogvarHead()), path)


def _tbcm_sample(folder, png, steps: int, *flags: str) -> np.ndarray:
    """``tbcm sample`` of the two prompts, 2 seeds each from seed 5, unscaled, as a uint8 array."""
    assert main(["sample", "--student", str(folder), "--prompts", str(png.with_suffix(".txt")), "--steps", str(steps),
                 "--n", "2", "--seed", "5", "--scale", "1", "--out", str(png), *flags]) == 0
    return np.asarray(Image.open(png))


def _by_hand(folder, steps: int, draw) -> np.ndarray:
    """The grid ``tbcm sample --seed 5 --n 2`` documents: column j's initial noise from seed 5 + j in
    every row, the later steps' noise from one generator seeded 5 + 10000; ``draw(student, cond,
    noise, generator)`` gives ``x0``."""
    bundle = load_bundle(folder, expect_kind="student")
    student = Student.from_bundle(bundle).eval()
    cond = bundle.encoder.encode(PROMPTS).repeat_interleave(2)
    noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(5 + j)) for j in range(2)])
    with torch.no_grad():
        x0 = draw(student, cond, noise.repeat(2, 1, 1, 1), torch.Generator().manual_seed(5 + 10_000))
    return np.asarray(grid_image(to_pixels(x0, 0.5), rows=2, scale=1))


def _sampled_by(folder, sampler: StudentSampler, steps: int) -> np.ndarray:
    return _by_hand(folder, steps, lambda s, c, x, g: sampler.sample(s, c, x, steps, generator=g))


@pytest.fixture
def saved_student(tmp_path):
    (tmp_path / "x.txt").write_text("\n".join(PROMPTS) + "\n")
    return _student_dir(tmp_path / "student", {**OLD_KEYS, "sampler": SAVED.to_dict()})


@pytest.mark.parametrize("steps,flags,want", [
    (3, [], SAVED),  # the saved sampler, its 3-step route
    (2, [], SAVED),  # its 2-step route
    (2, ["--routes", "2:0.5"], SAVED.overridden(routes={2: [0.5]})),
    (3, ["--routes", "none"], SAVED.overridden(routes={})),
    (3, ["--shift", "2.5"], StudentSampler(cfg_scale=3.0, shift=2.5, fresh_noise=0.5)),  # drops the saved routes
    (3, ["--shift", "2.5", "--routes", "3:0.8/0.2"], SAVED.overridden(shift=2.5, routes={3: [0.8, 0.2]})),
    (3, ["--cfg", "1.5"], SAVED.overridden(cfg_scale=1.5)),
    (3, ["--fresh-noise", "1"], SAVED.overridden(fresh_noise=1.0)),
])
def test_tbcm_sample_runs_the_saved_sampler_with_each_override(saved_student, tmp_path, steps, flags, want):
    got = _tbcm_sample(saved_student, tmp_path / "x.png", steps, *flags)
    assert np.array_equal(got, _sampled_by(saved_student, want, steps))
    if flags:  # each override changes the picture, so the check above can fail
        assert not np.array_equal(got, _sampled_by(saved_student, SAVED, steps))
    else:  # the sampler object wins over the older keys saved beside it
        assert not np.array_equal(got, _sampled_by(saved_student, StudentSampler.from_extra(OLD_KEYS), steps))


def test_a_student_saved_the_old_way_samples_as_before(tmp_path):
    """model.yaml with the legacy keys only: the guidance input, route shift, re-noising share and
    explicit routes they name, written out with the sampling primitives (what tbcm sample did)."""
    (tmp_path / "x.txt").write_text("\n".join(PROMPTS) + "\n")
    folder = _student_dir(tmp_path / "student", {"default_cfg_scale": 3.0, "shift": 1.0, "fresh_noise": 0.5,
                                                 "routes": {"3": [0.9, 0.3]}})

    def old(angles, fresh=0.5, w=3.0):
        return lambda s, c, x, g: student_sample(s, c, torch.full((4,), w), x, angles, generator=g, fresh_noise=fresh)

    three = _tbcm_sample(folder, tmp_path / "x.png", 3)
    assert np.array_equal(three, _by_hand(folder, 3, old([math.pi / 2, 0.9, 0.3, 0.0])))
    assert not np.array_equal(three, _by_hand(folder, 3, old([math.pi / 2, 0.9, 0.3, 0.0], fresh=1.0)))
    two = _tbcm_sample(folder, tmp_path / "x.png", 2)  # no 2-step route: arctan(shift 1) = pi/4
    assert np.array_equal(two, _by_hand(folder, 2, old([math.pi / 2, math.pi / 4, 0.0])))
    assert not np.array_equal(two, _by_hand(folder, 2, old([math.pi / 2, math.atan(2.5), 0.0])))
    bare = _student_dir(tmp_path / "bare", {})  # the oldest students: w 4.5, shift 2.5, fresh noise
    assert np.array_equal(_tbcm_sample(bare, tmp_path / "x.png", 2),
                          _by_hand(bare, 2, old([math.pi / 2, math.atan(2.5), 0.0], fresh=1.0, w=4.5)))


def test_the_image_generator_holds_the_saved_sampler_and_its_overrides(saved_student):
    from tbcm.generate import load_image_generator
    from tbcm.previews import independent_noise

    def by_hand(sampler, steps, seeds=(5, 6)):
        bundle = load_bundle(saved_student, expect_kind="student")
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = independent_noise(gens, (1, 8, 8))
        x0 = sampler.sample(Student.from_bundle(bundle).eval(), bundle.encoder.encode(PROMPTS), noise, steps,
                            generator=gens)
        return ((to_pixels(x0, 0.5) + 1) * 127.5).round().to(torch.uint8).repeat(1, 3, 1, 1)

    gen = load_image_generator(saved_student, steps=3)
    assert gen.sampler == SAVED and (gen.cfg_scale, gen.shift, gen.fresh_noise, gen.routes) == (
        3.0, 1.0, 0.5, {2: [0.4], 3: [0.9, 0.3]})
    assert torch.equal(gen.generate(PROMPTS, [5, 6]), by_hand(SAVED, 3))
    routed = load_image_generator(saved_student, steps=3, routes={3: [0.8, 0.2]})
    assert routed.sampler == SAVED.overridden(routes={3: [0.8, 0.2]})
    assert torch.equal(routed.generate(PROMPTS, [5, 6]), by_hand(routed.sampler, 3))
    assert not torch.equal(routed.generate(PROMPTS, [5, 6]), by_hand(SAVED, 3))
    shifted = load_image_generator(saved_student, steps=2, cfg_scale=2.0, shift=2.5, fresh_noise=1.0)
    assert shifted.sampler == StudentSampler(cfg_scale=2.0, shift=2.5, fresh_noise=1.0)  # the routes dropped


@pytest.mark.parametrize("flags,needle", [
    (["--fresh-noise", "1.5"], "--fresh-noise"),
    (["--shift", "0"], "--shift"),
    (["--shift", "nan"], "--shift"),
    (["--cfg", "-1"], "--cfg"),
    (["--routes", "3:0.2/0.5"], "decreasing"),
    (["--routes", "4:0.3"], "3 middle angle"),
    (["--routes", "four"], "STEPS:ANGLE"),
])
def test_bad_sample_overrides_are_one_line_and_write_nothing(saved_student, tmp_path, capsys, flags, needle):
    png = tmp_path / "x.png"
    err = assert_cli_error(["sample", "--student", str(saved_student), "--prompt", PROMPTS[0], "--out", str(png),
                            *flags], capsys)
    assert needle in err and not png.exists()


def test_student_samples_run_the_sampler_it_is_given(saved_student):
    from tbcm.previews import student_samples

    bundle = load_bundle(saved_student, expect_kind="student")
    student = Student.from_bundle(bundle).eval()
    args = (student, bundle.encoder, PROMPTS)
    with torch.no_grad():
        for independent in (False, True):
            new = student_samples(*args, SAVED, 3, 2, first_seed=7, independent=independent)
            assert not torch.equal(new, student_samples(*args, SAVED.overridden(routes={}), 3, 2, first_seed=7,
                                                        independent=independent))
