"""Tune and confirm splits: disjoint evaluation draws and training seeds, fixed in code, and the
rule a confirm figure must pass before a target counts as met."""

import math

import pytest

from tbcm.errors import UserError
from tbcm.evaluation import splits
from tbcm.evaluation.splits import (
    DRAW_STRIDE,
    DRAWS_PER_SPLIT,
    OLD_SEEDS,
    check_draw_size,
    draw_seed,
    draw_seeds,
    split_of_seed,
    summarize,
    target_met,
    train_seeds,
    verdict,
)


def test_every_draw_of_each_split_is_disjoint_from_every_other_and_from_the_old_seeds():
    blocks = [(split, d, draw_seeds(split, d)) for split in ("tune", "confirm") for d in range(DRAWS_PER_SPLIT)]
    spans = sorted((r.start, r.stop, split, d) for split, d, r in blocks)
    for (_, stop, *_), (start, *_rest) in zip(spans, spans[1:]):
        assert stop <= start  # no two draws share a seed
    tune = {(r.start, r.stop) for s, _, r in blocks if s == "tune"}
    confirm = {(r.start, r.stop) for s, _, r in blocks if s == "confirm"}
    assert max(stop for _, stop in tune) <= min(start for start, _ in confirm)
    assert spans[0][0] > OLD_SEEDS.stop  # far from the seeds the older benchmarks drew
    for split, d, r in blocks[::7]:
        assert split_of_seed(r.start) == (split, d) and split_of_seed(r.stop - 1) == (split, d)
    assert split_of_seed(0) is None and split_of_seed(20_000) is None


def test_a_draw_holds_several_hundred_images_per_digit_and_per_scenes_prompt():
    assert DRAW_STRIDE >= 10 * 1000 and DRAW_STRIDE >= 96 * 1000
    check_draw_size(96 * 1000)
    with pytest.raises(UserError, match="lower --n"):
        check_draw_size(DRAW_STRIDE + 1)


def test_training_seeds_are_fresh_and_disjoint():
    tune, confirm = train_seeds("tune"), train_seeds("confirm")
    assert len(tune) >= 3 and len(confirm) >= 3
    assert not set(tune) & set(confirm)
    assert not (set(tune) | set(confirm)) & {0, 1, 2}  # the seeds the old results trained


def test_draw_seed_and_its_errors():
    assert draw_seed("tune", 0) == splits.DRAW_BASE["tune"]
    assert draw_seed("confirm", 3) == splits.DRAW_BASE["confirm"] + 3 * DRAW_STRIDE
    with pytest.raises(UserError, match="tune .* confirm"):
        draw_seed("test", 0)
    for bad in (-1, DRAWS_PER_SPLIT):
        with pytest.raises(UserError, match="--draw"):
            draw_seed("confirm", bad)


def test_mean_standard_error_and_the_target_rule():
    s = summarize([9.29, 13.13, 9.36])
    assert s.mean == pytest.approx(10.5933, abs=1e-4)
    assert s.se == pytest.approx(2.19709 / math.sqrt(3), abs=1e-5)  # sample sd / sqrt(n)
    assert s.to_dict()["values"] == [9.29, 13.13, 9.36] and s.to_dict()["n"] == 3
    # the 1.3x line 0.35 standard errors above the mean (the example): not met
    ratios = [1.09, 1.55, 1.10]
    assert not target_met(ratios, 1.3) and verdict(ratios, 1.3) == "not shown"
    assert target_met([1.10, 1.12, 1.11], 1.3) and verdict([1.10, 1.12, 1.11], 1.3) == "met"
    # mean + 1 SE must be within: a mean under the line by less than one SE is not enough
    values = [1.0, 1.4]  # mean 1.2, se 0.2
    assert not target_met(values, 1.3) and target_met(values, 1.4 + 1e-9)
    # higher is better (adherence): mean - 1 SE at least the target
    assert target_met([0.98, 0.99, 0.985], 0.976, lower_is_better=False)
    assert not target_met([0.96, 0.99], 0.976, lower_is_better=False)
    # one seed has no standard error: never met
    single = summarize([1.0])
    assert math.isnan(single.se) and single.to_dict()["se"] is None and not target_met([1.0], 2.0)
    with pytest.raises(ValueError):
        summarize([])
