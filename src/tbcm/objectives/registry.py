"""The loss terms a run can use, by name: the trainer builds the ones a config turns on, sums them
(each times its weight) and checkpoints each under its name, without knowing what any of them is.

A new term is one file (a :class:`~tbcm.objectives.terms.LossTerm` subclass with a ``Config``
dataclass holding at least ``weight``, and a ``check(cfg, check)`` method) and one line below: its
config section ``objective.<name>`` then exists, is validated and saved like every other.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass

from .adversarial import AdversarialConfig, AdversarialTerm
from .distribution_matching import DistributionMatchingConfig, DistributionMatchingTerm
from .endpoint import EndpointConfig, EndpointTerm
from .scm import SCMConfig, ScmTerm
from .terms import LossTerm, TermContext

#: name -> (term class, its config dataclass or None); the order is the order of the loss sum
TERMS: dict[str, tuple[type[LossTerm], type | None]] = {
    "scm": (ScmTerm, None),  # always on; its settings are objective.* itself
    "endpoint": (EndpointTerm, EndpointConfig),
    "adversarial": (AdversarialTerm, AdversarialConfig),
    "distribution_matching": (DistributionMatchingTerm, DistributionMatchingConfig),
}

#: objective.*: the sCM settings plus one section per registered term with a config
ObjectiveConfig = make_dataclass(
    "ObjectiveConfig",
    [(name, config, field(default_factory=config)) for name, (_, config) in TERMS.items() if config is not None],
    bases=(SCMConfig,))
ObjectiveConfig.__module__ = __name__


def register(term: type[LossTerm], config: type | None = None) -> None:
    """Add a term (tests, plug-ins). A term registered after import has no config section: its
    :meth:`~tbcm.objectives.terms.LossTerm.build` decides from the rest of the config."""
    if term.name in TERMS:
        raise ValueError(f"a loss term named {term.name!r} is registered already")
    TERMS[term.name] = (term, config)


def build_terms(ctx: TermContext) -> list[LossTerm]:
    """The terms this run's config turns on, in registry order."""
    return [term for cls, _ in TERMS.values() if (term := cls.build(ctx)) is not None]


def check_terms(cfg, check) -> None:
    """Each term section's own checks (``check(ok, key, value, need)`` raises a one-line error)."""
    for name, (_, config) in TERMS.items():
        if config is not None and hasattr(config, "check"):
            getattr(cfg.objective, name).check(cfg, check)
