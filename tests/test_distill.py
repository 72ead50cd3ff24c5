"""The training step: a real update, the skip of non-finite steps, EMA."""

import torch

from tbcm.config import DistillConfig, load_config
from tbcm.train import Distiller
from tbcm.train.outputs import save_student


def _distiller(teacher_dir, *extra):
    cfg = load_config(DistillConfig, None, [f"teacher={teacher_dir}", "prompts_per_step=2", "pairs.route_points=4",
                                            "optim.warmup_steps=0", *extra])
    return Distiller(cfg)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_step_updates_student_and_ema_but_never_the_teacher(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir)
    teacher_before, student_before = _params(d.teacher), _params(d.student)
    stats = d.train_step()
    stats = d.train_step()
    assert stats["pairs"] == 2 * 3 and stats["skipped"] == 0 and d.step == 2
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, _params(d.teacher)))
    assert any(not torch.equal(a, b) for a, b in zip(student_before, _params(d.student)))
    ema = [t.clone() for t in d.ema.shadow.values()]
    # EMA lies strictly between the start and the current weights for a decaying average: it
    # moved away from the start, and it lags behind the current weights
    assert any(not torch.equal(a, b) for a, b in zip(ema, student_before))
    assert any(not torch.equal(a, b) for a, b in zip(ema, _params(d.student)))


def test_non_finite_step_is_skipped_and_counted(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir, "pairs.pool_prompts=0")  # each step's own rollout: poison that step
    real_sample = d.source.sample

    def poisoned(ids):
        pairs = real_sample(ids)
        pairs.u[0, 0, 0, 0] = float("nan")
        return pairs

    d.source.sample = poisoned
    before = _params(d.student)
    stats = d.train_step()
    assert stats["skipped"] == 1 and d.skipped == 1 and d.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, _params(d.student)))
    d.source.sample = real_sample
    assert d.train_step()["skipped"] == 1  # later good steps train again and the count stays
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(d.student)))


def test_finite_difference_backend_trains_too(tiny_teacher_dir):
    d = _distiller(tiny_teacher_dir, "objective.jvp=finite_difference")
    before = _params(d.student)
    assert d.train_step()["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(d.student)))


def test_prompts_are_walked_in_shuffled_passes_and_sharded_across_ranks():
    from tbcm.pairs.prompts import PromptSampler

    one = PromptSampler(5, seed=3)
    assert sorted(one.next_ids(5).tolist()) == [0, 1, 2, 3, 4]
    assert sorted(one.next_ids(5).tolist()) == [0, 1, 2, 3, 4]
    single = PromptSampler(7, seed=1)
    ranks = [PromptSampler(7, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(4):
        glob = single.next_ids(6)
        parts = [s.next_ids(3) for s in ranks]
        assert torch.equal(parts[0], glob[0::2]) and torch.equal(parts[1], glob[1::2])


def test_the_sampling_copy_takes_ema_parameters_and_keeps_the_networks_buffers(tiny_teacher_dir):
    """A network with a persistent buffer (diffusers' SD3 keeps its position table as one): the EMA
    holds parameters only, the buffer comes from the network as built."""
    d = _distiller(tiny_teacher_dir)
    table = torch.arange(6.0).reshape(2, 3)
    d.student_template.register_buffer("table", table.clone())
    d.train_step()
    copy = d.student_for_sampling()
    assert torch.equal(copy.network.table, table)
    for name, value in d.ema.full_state_dict().items():
        assert torch.equal(copy.state_dict()[name], value)


def test_learning_rate_schedule_is_the_warmup_then_the_closed_form_cosine(tiny_teacher_dir):
    # warmup: lr * (step + 1) / W; cosine from the warmup's end (step W - 1) to decay_to * lr at the
    # last step, lr * (c + (1 - c) (1 + cos(pi p)) / 2) with p the fraction of the way
    lr, w, steps, c = 1e-3, 10, 110, 0.1
    d = _distiller(tiny_teacher_dir, f"optim.lr={lr}", f"optim.warmup_steps={w}", f"steps={steps}",
                   "optim.decay=cosine", f"optim.decay_to={c}")
    assert abs(d.lr_at(0) - lr / w) < 1e-15 and abs(d.lr_at(4) - lr * 5 / w) < 1e-15
    assert abs(d.lr_at(w - 1) - lr) < 1e-15
    mid = (w - 1 + steps - 1) / 2  # p = 1/2: halfway between lr and c * lr
    assert abs(d.lr_at(int(mid)) - lr * (c + (1 - c) / 2)) < 1e-15
    assert abs(d.lr_at(steps - 1) - c * lr) < 1e-15 and abs(d.lr_at(steps + 50) - c * lr) < 1e-15
    lrs = [d.lr_at(s) for s in range(w - 1, steps)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing after the warmup
    flat = _distiller(tiny_teacher_dir, f"optim.lr={lr}", f"optim.warmup_steps={w}", f"steps={steps}",
                      "optim.decay=constant")
    assert [flat.lr_at(s) for s in (w - 1, mid, steps - 1)] == [lr] * 3


def test_a_bad_decay_is_refused_in_one_line(tiny_teacher_dir):
    import pytest

    from tbcm.errors import UserError

    with pytest.raises(UserError, match="optim.decay"):
        _distiller(tiny_teacher_dir, "optim.decay=linear")
    with pytest.raises(UserError, match="optim.decay_to"):
        _distiller(tiny_teacher_dir, "optim.decay_to=1.5")


def test_the_student_keeps_its_own_route_shift_and_its_generator_samples_on_it(tiny_teacher_dir, tmp_path):
    import math

    from tbcm.generate import load_image_generator
    from tbcm.models.bundle import load_bundle
    from tbcm.sampling import student_sample, to_pixels

    d = _distiller(tiny_teacher_dir, "sampler.shift=1.0", "sampler.fresh_noise=1.0")
    d.train_step()
    save_student(d, d.student_for_sampling(), tmp_path / "student")
    extra = load_bundle(tmp_path / "student", expect_kind="student").meta.extra
    assert extra["sampler"]["shift"] == 1.0
    gen = load_image_generator(tmp_path / "student", steps=2)
    prompts, seeds = ["a handwritten digit 3", "a handwritten digit 7"], [5, 6]
    got = gen.generate(prompts, seeds)
    # shift 1: the 2-step route's middle angle is arctan(1) = pi/4 (2.5 would give 1.19)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(gen.shape, generator=g) for g in gens])
    x0 = student_sample(gen.student, gen.encoder.encode(prompts), torch.full((2,), gen.cfg_scale), noise,
                        [math.pi / 2, math.pi / 4, 0.0], generator=gens)
    want = ((to_pixels(x0, gen.student.sigma_d) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(got, want.repeat(1, 3 // want.shape[1], 1, 1))
    off_route = student_sample(gen.student, gen.encoder.encode(prompts), torch.full((2,), gen.cfg_scale), noise,
                               [math.pi / 2, 1.19, 0.0], generator=[torch.Generator().manual_seed(s) for s in seeds])
    assert not torch.equal(off_route, x0)  # the middle angle matters, so the check above can fail


def test_the_student_keeps_its_re_noising_and_sample_and_eval_use_it(tiny_teacher_dir, tmp_path, capsys):
    import json

    from tbcm.cli import main
    from tbcm.generate import load_image_generator
    from tbcm.models.bundle import load_bundle
    from tbcm.sampling import student_angles, student_sample, to_pixels

    d = _distiller(tiny_teacher_dir, "sampler.fresh_noise=0.5")
    d.train_step()
    save_student(d, d.student_for_sampling(), tmp_path / "student")
    assert load_bundle(tmp_path / "student", expect_kind="student").meta.extra["sampler"]["fresh_noise"] == 0.5
    gen = load_image_generator(tmp_path / "student", steps=2)
    prompts, seeds = ["a handwritten digit 3", "a handwritten digit 7"], [5, 6]

    def by_hand(fresh):  # each image's generator draws its initial noise, then its re-noising
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(gen.shape, generator=g) for g in gens])
        x0 = student_sample(gen.student, gen.encoder.encode(prompts), torch.full((2,), gen.cfg_scale), noise,
                            student_angles(2, gen.shift), fresh_noise=fresh, generator=gens)
        return ((to_pixels(x0, gen.student.sigma_d) + 1) * 127.5).round().to(torch.uint8).repeat(1, 3, 1, 1)

    got = gen.generate(prompts, seeds)
    assert torch.equal(got, by_hand(0.5)) and not torch.equal(got, by_hand(1.0))  # the mix matters
    assert torch.equal(load_image_generator(tmp_path / "student", steps=2, fresh_noise=1.0).generate(prompts, seeds),
                       by_hand(1.0))
    # tbcm eval: the saved mix unless told; 1 step does not re-noise
    argv = ["eval", str(tmp_path / "student"), "--steps", "1,2", "--n", "3", "--json"]
    assert main(argv) == 0
    saved = json.loads(capsys.readouterr().out)
    assert main([*argv, "--fresh-noise", "1"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert saved["fresh_noise"] == 0.5 and fresh["fresh_noise"] == 1.0
    assert saved["student"]["1"] == fresh["student"]["1"] and saved["student"]["2"] != fresh["student"]["2"]


def test_the_student_keeps_its_routes_and_sample_and_eval_use_them(tiny_teacher_dir, tmp_path, capsys):
    import json
    import math

    import pytest

    from tbcm.cli import main
    from tbcm.errors import UserError
    from tbcm.generate import load_image_generator
    from tbcm.models.bundle import load_bundle
    from tbcm.sampling import student_angles, student_sample, to_pixels

    d = _distiller(tiny_teacher_dir, "sampler.routes=[[0.5, 0.1]]", "sampler.fresh_noise=1.0")
    d.train_step()
    save_student(d, d.student_for_sampling(), tmp_path / "student")
    assert load_bundle(tmp_path / "student", expect_kind="student").meta.extra["sampler"]["routes"] == {"3": [0.5, 0.1]}
    gen = load_image_generator(tmp_path / "student", steps=3)
    prompts, seeds = ["a handwritten digit 3", "a handwritten digit 7"], [5, 6]

    def by_hand(angles):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.stack([torch.randn(gen.shape, generator=g) for g in gens])
        x0 = student_sample(gen.student, gen.encoder.encode(prompts), torch.full((2,), gen.cfg_scale), noise,
                            angles, generator=gens)
        return ((to_pixels(x0, gen.student.sigma_d) + 1) * 127.5).round().to(torch.uint8).repeat(1, 3, 1, 1)

    got = gen.generate(prompts, seeds)
    assert torch.equal(got, by_hand([math.pi / 2, 0.5, 0.1, 0.0]))
    assert not torch.equal(got, by_hand(student_angles(3, gen.shift)))  # the route matters
    # tbcm eval: the saved routes unless told; --routes none or --shift alone: the shifted route
    argv = ["eval", str(tmp_path / "student"), "--steps", "3", "--n", "3", "--json"]
    runs = {}
    for name, extra in (("saved", []), ("none", ["--routes", "none"]), ("flag", ["--routes", "3:0.5/0.1"]),
                        ("shift", ["--shift", str(gen.shift)])):
        assert main([*argv, *extra]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    assert runs["saved"]["student_routes"] == {"3": [0.5, 0.1]} and runs["none"]["student_routes"] == {}
    assert runs["saved"]["student"] == runs["flag"]["student"] != runs["none"]["student"] == runs["shift"]["student"]
    with pytest.raises(UserError, match="sampler.routes"):
        _distiller(tiny_teacher_dir, "sampler.routes=[[0.1, 0.5]]")
    with pytest.raises(UserError, match="two routes for 3 steps"):
        _distiller(tiny_teacher_dir, "sampler.routes=[[0.5, 0.1], [0.6, 0.2]]")


def test_a_re_noising_share_outside_zero_one_is_refused(tiny_teacher_dir):
    import pytest

    from tbcm.errors import UserError

    with pytest.raises(UserError, match="sampler.fresh_noise"):
        _distiller(tiny_teacher_dir, "sampler.fresh_noise=1.5")
