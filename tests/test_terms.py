"""Loss terms as plug-ins: any combination runs in one trainer, and a new term is registered
without touching it (its loss joins the sum, its state the checkpoint, its stats the log)."""

import copy
import math

import pytest
import torch

from tbcm.objectives import registry
from tbcm.objectives.terms import LossTerm
from tests.extra_terms import distiller, flat

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = ["sampler.tune=false", "prompts_per_step=2", "pairs.route_points=4", "pairs.pool_prompts=4", "text_cache=none",
        "optim.warmup_steps=0", "start_check_max_error=0"]
BOTH = ["objective.adversarial.weight=0.5", "objective.adversarial.samples=2",
        "objective.distribution_matching.weight=0.1", "objective.distribution_matching.samples=2",
        "objective.endpoint.weight=0.1"]


def test_the_adversarial_and_distribution_matching_terms_run_together(tiny_teacher_dir, tmp_path):
    d = distiller(tiny_teacher_dir, [*BASE, *BOTH])
    assert [t.name for t in d.terms] == ["scm", "endpoint", "adversarial", "distribution_matching"]
    heads, fake = flat(d.term("adversarial").module), flat(d.term("distribution_matching").module)
    stats = d.train_step()
    for key in ("loss", "endpoint", "adv_g", "adv_d", "dmd_g", "dmd_fake"):
        assert math.isfinite(stats[key]), key
    # each term's own network stepped after the student's backward
    assert not torch.equal(heads, flat(d.term("adversarial").module))
    assert not torch.equal(fake, flat(d.term("distribution_matching").module))
    state = d.state_dict()
    assert {"adversarial", "distribution_matching"} <= set(state)  # each checkpointed under its name
    resumed = distiller(tiny_teacher_dir, [*BASE, *BOTH])
    resumed.load_state_dict(copy.deepcopy(state))
    a, b = d.train_step(), resumed.train_step()
    assert all(a[k] == b[k] for k in ("loss", "adv_g", "adv_d", "dmd_g", "dmd_fake"))  # exact resume


class ScaleTerm(LossTerm):
    """A toy term with state: ``weight * mean(F^2) * scale`` over the pairs, whose ``scale`` grows
    by one after each backward (so a resume that lost it would differ)."""

    name = "toy_scale"

    def __init__(self, ctx):
        super().__init__(ctx, 0.5)
        self.scale = torch.tensor(1.0)

    @classmethod
    def build(cls, ctx):
        return cls(ctx)

    def loss(self, batch, F, logvar, extra_F):
        value = F.pow(2).mean() * self.scale
        return value, {"toy": value.detach()}

    def after_backward(self):
        self.scale = self.scale + 1
        return {"toy_scale": self.scale.clone()}

    def state_dict(self):
        return {"scale": self.scale.clone()}

    def load_state_dict(self, state):
        self.scale = state["scale"].clone()


@pytest.fixture
def toy_term():
    registry.register(ScaleTerm)
    yield ScaleTerm
    del registry.TERMS[ScaleTerm.name]


def test_a_term_registered_from_outside_trains_logs_and_checkpoints(tiny_teacher_dir, toy_term):
    d = distiller(tiny_teacher_dir, BASE)
    assert d.term("toy_scale") is not None
    stats = d.train_step()
    assert stats["toy"] > 0 and stats["toy_scale"] == 2.0
    assert d.state_dict()["toy_scale"]["scale"] == 2.0
    # its loss is in the sum: without it (same seed, same pairs) the student lands elsewhere
    del registry.TERMS["toy_scale"]
    without = distiller(tiny_teacher_dir, BASE)
    registry.register(ScaleTerm)
    without.train_step()
    assert not torch.equal(flat(d.student), flat(without.student))
    fresh = distiller(tiny_teacher_dir, BASE)
    fresh.load_state_dict(d.state_dict())
    assert float(fresh.term("toy_scale").scale) == 2.0


def test_a_duplicate_term_name_is_refused(toy_term):
    with pytest.raises(ValueError, match="registered already"):
        registry.register(ScaleTerm)
