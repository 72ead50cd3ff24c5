"""Config keys that changed: renamed keys and removed options, so that run folders and configs
written before a change still load (and a removed option that was on is refused in one line)."""

from __future__ import annotations

import math

import yaml

from .errors import UserError

#: keys renamed by the trainer's redesign (2026-12-04): old run folders and configs load through this
RENAMED = {
    "sample.cfg_scale": "sampler.cfg_scale", "sample.student_shift": "sampler.shift",
    "sample.student_fresh_noise": "sampler.fresh_noise", "sample.student_routes": "sampler.routes",
    "sample.prompts": "preview.prompts", "sample.seeds": "preview.seeds",
    "sample.teacher_steps": "preview.teacher_steps", "sample.student_steps": "preview.student_steps",
    "sample_every": "preview.every",
    "objective.endpoint_weight": "objective.endpoint.weight",
    "objective.endpoint_min_angle": "objective.endpoint.min_angle",
}
_ANY = object()
#: options removed because they measured worse (docs/notebook): the value that left them off still
#: loads (every saved config.yaml holds it), any other is refused in one line saying why
REMOVED = {
    "pairs.noise_point": (False, "the pure-noise pair measured worse (digits 1 step 13.4 vs 10.0, scenes 1.51x vs 1.46x)"),
    "pairs.renoised_points": (0, "re-noised pairs measured worse at 1 step (digits 12.45 vs 9.41)"),
    "pairs.renoised_max_angle": (math.pi / 2, "re-noised pairs kept low measured worse at 1 step (digits 13.66 vs 9.41)"),
    "pairs.route": ("official", "the tbcm_v1 route measured worse (digits 1 step 58.7 +- 52.6 vs 29.7 +- 7.1); "
                                "the official route is the only one"),
    "pairs.points_per_trajectory": (0, "a subset of each trajectory's points was one ablation (K=32), not a gain"),
    "pairs.substeps": (1, "a finer teacher solve of the rollout moved the digits' 1-step FID by -0.43 +- 0.41 "
                          "(2 tune seeds) at 1.42x the time per pair: the student's error, not its teacher's, "
                          "limits it"),
    "sample.shift": (_ANY, "the preview teacher runs on pairs.shift"),
}
_LEGACY_ENDPOINT_WEIGHT = 0.1  # what objective.endpoint_weight: null meant with source=trajectory


def _removed_inert(key: str, value) -> bool:
    inert = REMOVED[key][0]
    if inert is _ANY:
        return True
    if isinstance(inert, float) and isinstance(value, (int, float)):
        return math.isclose(value, inert, rel_tol=1e-9)
    return value == inert


def _migrate_key(key: str, value, source: str) -> tuple[str, object] | None:
    """``(new key, value)`` of an old key (``None``: dropped), or a :class:`UserError` for a
    removed option that was on."""
    if key in REMOVED:
        if _removed_inert(key, value):
            return None
        raise UserError(f"config key {key!r} was removed: {REMOVED[key][1]}; drop it")
    if key == "objective.endpoint_weight" and value is None:  # resolved per source, as it was
        value = _LEGACY_ENDPOINT_WEIGHT if source == "trajectory" else 0.0
    return RENAMED.get(key, key), value


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (no config field holds a mapping of its own)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def migrate_tree(tree: dict) -> dict:
    """A config mapping with old keys renamed and inert removed ones dropped (nested again)."""
    flat, source = _flatten(tree), tree.get("source", "trajectory")
    out: dict = {}
    for key, value in flat.items():
        moved = _migrate_key(key, value, source)
        if moved is None:
            continue
        node, parts = out, moved[0].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = moved[1]
    return out


def migrate_override(item: str) -> str | None:
    """A ``key=value`` override with an old key renamed (``None``: a removed option at its off value)."""
    key, _, text = item.partition("=")
    if key.strip() not in RENAMED and key.strip() not in REMOVED:
        return item
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    moved = _migrate_key(key.strip(), value, "trajectory")
    return None if moved is None else f"{moved[0]}={text}"
