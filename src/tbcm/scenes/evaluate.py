"""Scenes evaluation: FID on the judge's features and GenEval-style adherence, on prompts the
distillation saw and on held-out prompts (object pairs kept out of the teacher's training data and
of the distillation prompts file).

The prompt sets are fixed: :data:`SEEN_PROMPTS` (the 12 single objects and 36 training pairs) and
:data:`HELDOUT_PROMPTS` (48 scenes of the held-out pairs).  A model is sampled ``n`` times per
prompt (image ``j`` of prompt ``i`` from seed ``seed + i n + j``, see :mod:`tbcm.evaluation.draws`);
each split's FID is against ``REF_PER_PROMPT`` freshly rendered real scenes per prompt of that split.

Held out from the teacher: the scenes teacher trained on renders of the training split drawn by its
own seed (``tbcm.data.load_scenes``, render seed 1 for the shipped teacher), the judge on render
seeds >= 1000; the FID reference is rendered with :data:`REF_SEED` (777, 778): fresh renders, the
same distribution, never the same images. The data floor renders ``n`` real scenes per prompt with
:data:`FLOOR_SEED` (555, 556), disjoint from all of those.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .generator import SIZE, parse_prompt, render_many, split, to_flow
from .judge import SceneJudge, attribute_scores, label_ids, load_judge

PER_SPLIT = 48
REF_PER_PROMPT = 32
REF_SEED = 777  # render seed of the FID reference scenes (the judge trained on seeds >= 1000)
FLOOR_SEED = 555  # render seed of the data floor's real scenes (+1 for the held-out split)
DEFAULT_N = 32


def _prompt_sets() -> tuple[list[str], list[str]]:
    train, held = split()
    rng = np.random.default_rng(0)
    singles = [s for s in train if s.relation is None]
    pairs = [s for s in train if s.relation is not None]
    seen = singles + [pairs[i] for i in sorted(rng.choice(len(pairs), PER_SPLIT - len(singles), replace=False))]
    unseen = [held[i] for i in sorted(rng.choice(len(held), PER_SPLIT, replace=False))]
    return [s.prompt() for s in seen], [s.prompt() for s in unseen]


SEEN_PROMPTS, HELDOUT_PROMPTS = _prompt_sets()


@lru_cache(maxsize=2)
def _reference(which: str) -> torch.Tensor:
    prompts = SEEN_PROMPTS if which == "seen" else HELDOUT_PROMPTS
    scenes = [parse_prompt(p) for p in prompts for _ in range(REF_PER_PROMPT)]
    return to_flow(render_many(scenes, REF_SEED + (which == "heldout")))


class ScenesSuite:
    """``score(images, n)`` of images ``[len(prompts) * n, 3, 32, 32]``, row-major (prompt, seed),
    for :data:`prompts` = seen then held-out.  ``"fid"`` / ``"adherence"`` are the seen split's FID
    and exact-match adherence (what best-guidance selection uses); ``"seen"`` / ``"heldout"``
    carry every score of each split."""

    name = "scenes"
    default_n = DEFAULT_N
    prompts = SEEN_PROMPTS + HELDOUT_PROMPTS
    unit = "prompt"
    shape = (3, SIZE, SIZE)

    def __init__(self, judge: SceneJudge | None = None):
        from ..evaluation.metrics import FIDReference

        self.judge = judge if judge is not None else load_judge()
        self.refs = {which: FIDReference(_reference(which), self.judge, shape=(3, SIZE, SIZE))
                     for which in ("seen", "heldout")}

    @staticmethod
    def matches(channels: int, image_size: int) -> bool:
        return (channels, image_size) == (3, SIZE)

    @classmethod
    def check(cls, bundle, where: str) -> None:
        bundle.encoder.token_ids(cls.prompts)  # PromptError (a UserError) names the unknown word

    def score(self, images: torch.Tensor, n: int) -> dict:
        if images.shape[0] != len(self.prompts) * n:
            raise ValueError(f"expected {len(self.prompts) * n} images, got {images.shape[0]}")
        half = len(SEEN_PROMPTS) * n
        out = {}
        for which, imgs, prompts in (("seen", images[:half], SEEN_PROMPTS), ("heldout", images[half:], HELDOUT_PROMPTS)):
            target = label_ids([parse_prompt(p).labels() for p in prompts for _ in range(n)])
            out[which] = {"fid": self.refs[which](imgs), **attribute_scores(self.judge.predict_ids(imgs), target)}
        return {"fid": out["seen"]["fid"], "adherence": out["seen"]["all"], **out}

    # -- fidelity: the judge's view of two paired image sets ------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` judge features of ``[N, 3, 32, 32]`` pixels in ``[-1, 1]``."""
        dtype = next(self.judge.parameters()).dtype
        return torch.cat([self.judge.features(c.to(dtype)) for c in images.split(1024)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 6]`` judged attribute ids (count/axis, objects' colours and shapes)."""
        return self.judge.predict_ids(images)

    def fid_against(self, reference: torch.Tensor, images: torch.Tensor) -> float:
        """FID of ``images`` against ``reference`` (e.g. the teacher's samples), every prompt together."""
        from ..evaluation.metrics import FIDReference

        return FIDReference(reference, self.judge, shape=(3, SIZE, SIZE))(images)

    def data_floor(self, n: int) -> dict:
        """FID of ``n`` fresh real renders per prompt (:data:`FLOOR_SEED`) against each split's
        reference: as many real images as a generated set of ``n`` per prompt. ``"fid"``: the seen split's."""
        out = {}
        for which, prompts in (("seen", SEEN_PROMPTS), ("heldout", HELDOUT_PROMPTS)):
            real = to_flow(render_many([parse_prompt(p) for p in prompts for _ in range(n)],
                                       FLOOR_SEED + (which == "heldout")))
            out[which] = {"fid": self.refs[which](real)}
        return {"fid": out["seen"]["fid"], **out, "images": len(self.prompts) * n, "per_prompt": n,
                "real": f"fresh renders (seeds {FLOOR_SEED}, {FLOOR_SEED + 1}) against the reference renders "
                        f"(seeds {REF_SEED}, {REF_SEED + 1})"}

    def reference_info(self) -> dict:
        return {"judge": self.judge.meta.get("accuracy", {}), "per_prompt": REF_PER_PROMPT,
                "seen_prompts": len(SEEN_PROMPTS), "heldout_prompts": len(HELDOUT_PROMPTS)}

    @staticmethod
    def footer(result: dict) -> str:
        return (f"{result['n_per_class']} images per prompt ({len(SEEN_PROMPTS)} seen, {len(HELDOUT_PROMPTS)} "
                f"held-out), cfg {result['cfg_scale']}, image seeds from {result['seed']}, one per image; "
                f"FID on the scenes judge's features "
                f"against {REF_PER_PROMPT} fresh real scenes per prompt; adherence = everything the prompt asks right")

    @staticmethod
    def extra_lines(model: str, steps: str, cfg: float, scores: dict) -> list[str]:
        lines = []
        for which in ("seen", "heldout"):
            s = scores[which]
            lines.append(f"  {which:<8} FID {s['fid']:7.2f}  all {s['all']:6.1%}  count {s['count']:6.1%}  "
                         f"colours {s['colours']:6.1%}  shapes {s['shapes']:6.1%}  binding {s['binding']:6.1%}  "
                         f"position {s['position']:6.1%}")
        return lines

