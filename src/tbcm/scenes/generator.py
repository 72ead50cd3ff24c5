"""Procedurally generated scenes: 32x32 RGB images of one or two coloured shapes, with prompts
and exact attribute labels.

A scene is one object (``"a red circle"``) or two objects in a spatial relation (``"a red circle
left of a blue square"``; relations ``left of``, ``right of``, ``above``, ``below``).  Objects are
drawn with Pillow at 4x resolution and downsampled (antialiased edges); size and position are
random within rules that keep the relation unambiguous: the two objects never overlap and the
displacement along the relation's axis is at least twice the one across it.

Labels are *canonical*, independent of how the prompt words the relation: for two objects, the
axis (horizontal or vertical) and the objects in reading order (left one first for horizontal,
top one first for vertical).  ``"a red circle right of a blue square"`` and ``"a blue square left
of a red circle"`` have the same labels.  :func:`parse_prompt` maps a prompt to the same labels,
so adherence is ``judge(image) == parse_prompt(prompt)`` attribute by attribute.

The held-out split (:func:`split`) keeps a fixed 20% of the unordered object pairs out of the
teacher's training data and the distillation prompts, in every relation and order: every colour,
shape and object is seen, but those pairs only at evaluation (compositional generalisation).

Images are uint8 ``[N, 32, 32, 3]`` (:func:`render`) or flow-space float ``[N, 3, 32, 32]`` in
``[-1, 1]`` (:func:`scene_images`).  Everything is a pure function of its seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw

SIZE = 32
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (225, 45, 45), "green": (45, 185, 70), "blue": (55, 90, 235), "yellow": (235, 210, 45)}
COLOUR_NAMES = tuple(COLOURS)
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND = (24, 24, 28)
AXES = ("none", "horizontal", "vertical")  # label 0: a one-object scene
HELDOUT_SHARE = 0.2
SPLIT_SEED = 0
RADIUS = (4.0, 6.5)  # object half-size in pixels of the 32x32 image


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str

    def words(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """What a prompt asks for: ``first`` alone (``relation is None``) or ``first <relation> second``."""

    first: Obj
    relation: str | None = None
    second: Obj | None = None

    def prompt(self) -> str:
        if self.relation is None:
            return f"a {self.first.words()}"
        return f"a {self.first.words()} {self.relation} a {self.second.words()}"

    def labels(self) -> "Labels":
        """The canonical labels (axis, objects in reading order) of any image of this scene."""
        if self.relation is None:
            return Labels(1, "none", self.first, None)
        axis = "horizontal" if self.relation in ("left of", "right of") else "vertical"
        before = self.relation in ("left of", "above")  # is `first` the left / top one?
        a, b = (self.first, self.second) if before else (self.second, self.first)
        return Labels(2, axis, a, b)


@dataclass(frozen=True)
class Labels:
    """Canonical attributes: ``count`` 1 or 2, ``axis`` (``AXES``), objects in reading order."""

    count: int
    axis: str
    obj1: Obj
    obj2: Obj | None

    def as_ids(self) -> tuple[int, int, int, int, int, int]:
        """``(count-1, axis, shape1, colour1, shape2+1|0, colour2+1|0)``: the judge's targets."""
        s2 = 0 if self.obj2 is None else SHAPES.index(self.obj2.shape) + 1
        c2 = 0 if self.obj2 is None else COLOUR_NAMES.index(self.obj2.colour) + 1
        return (self.count - 1, AXES.index(self.axis), SHAPES.index(self.obj1.shape),
                COLOUR_NAMES.index(self.obj1.colour), s2, c2)

    @staticmethod
    def from_ids(ids) -> "Labels":
        count, axis, s1, c1, s2, c2 = (int(v) for v in ids)
        obj2 = None if count == 0 or s2 == 0 or c2 == 0 else Obj(COLOUR_NAMES[c2 - 1], SHAPES[s2 - 1])
        return Labels(count + 1, AXES[axis], Obj(COLOUR_NAMES[c1], SHAPES[s1]), obj2)


def all_objects() -> list[Obj]:
    return [Obj(c, s) for c in COLOUR_NAMES for s in SHAPES]


def all_scenes() -> list[Scene]:
    """Every scene: 12 single objects, then 12 x 11 ordered pairs x 4 relations (540 in all)."""
    objs = all_objects()
    pairs = [Scene(a, rel, b) for a, b in itertools.permutations(objs, 2) for rel in RELATIONS]
    return [Scene(o) for o in objs] + pairs


def heldout_pairs(seed: int = SPLIT_SEED, share: float = HELDOUT_SHARE) -> frozenset[frozenset[Obj]]:
    """The unordered object pairs kept out of training: a fixed ``share`` of the 66, by ``seed``."""
    pairs = [frozenset(p) for p in itertools.combinations(all_objects(), 2)]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return frozenset(pairs[i] for i in order[: round(share * len(pairs))])


def is_heldout(scene: Scene, held: frozenset | None = None) -> bool:
    held = heldout_pairs() if held is None else held
    return scene.second is not None and frozenset((scene.first, scene.second)) in held


def split(seed: int = SPLIT_SEED) -> tuple[list[Scene], list[Scene]]:
    """``(train scenes, held-out scenes)``: all single objects are in train."""
    held = heldout_pairs(seed)
    scenes = all_scenes()
    return [s for s in scenes if not is_heldout(s, held)], [s for s in scenes if is_heldout(s, held)]


@lru_cache(maxsize=1)
def _scenes_by_prompt() -> dict[str, Scene]:
    return {s.prompt(): s for s in all_scenes()}


def parse_prompt(prompt: str) -> Scene:
    """The scene a prompt names (``ValueError`` for anything else)."""
    key = " ".join(prompt.lower().split())
    if key not in _scenes_by_prompt():
        raise ValueError(f"{prompt!r} is not a scenes prompt: e.g. 'a red circle left of a blue square'")
    return _scenes_by_prompt()[key]


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, cx: float, cy: float, r: float) -> None:
    k = SUPERSAMPLE
    x0, y0, x1, y1 = (cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k
    colour = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif obj.shape == "square":
        s = r * 0.89  # about the circle's area (sqrt(pi) / 2 = 0.886); the shipped judge and teacher saw 0.89
        draw.rectangle(((cx - s) * k, (cy - s) * k, (cx + s) * k, (cy + s) * k), fill=colour)
    else:  # upright triangle
        draw.polygon([(cx * k, y0), (x1, y1), (x0, y1)], fill=colour)


def _place(rng: np.random.Generator, scene: Scene) -> list[tuple[Obj, float, float, float]]:
    """(object, centre x, centre y, half-size) in image pixels, following the scene's rules."""
    lo, hi = RADIUS
    if scene.relation is None:
        r = rng.uniform(lo, hi)
        return [(scene.first, rng.uniform(r + 1, SIZE - r - 1), rng.uniform(r + 1, SIZE - r - 1), r)]
    labels = scene.labels()
    while True:  # rejection sampling; accepts within a few tries
        ra, rb = rng.uniform(lo, hi, size=2)
        ax, ay = rng.uniform(ra + 1, SIZE - ra - 1, size=2)
        bx, by = rng.uniform(rb + 1, SIZE - rb - 1, size=2)
        along, across = (bx - ax, by - ay) if labels.axis == "horizontal" else (by - ay, bx - ax)
        if along >= ra + rb + 2 and abs(across) * 2 <= along:
            return [(labels.obj1, ax, ay, ra), (labels.obj2, bx, by, rb)]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """One image of ``scene``: uint8 ``[32, 32, 3]``."""
    k = SUPERSAMPLE
    image = Image.new("RGB", (SIZE * k, SIZE * k), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj, cx, cy, r in _place(rng, scene):
        _draw(draw, obj, cx, cy, r)
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX))


def render_many(scenes: list[Scene], seed: int) -> np.ndarray:
    """Images of ``scenes`` (one each, in order): uint8 ``[N, 32, 32, 3]``, a function of ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([render(s, rng) for s in scenes]) if scenes else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def to_flow(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 32, 32, 3]`` -> float ``[N, 3, 32, 32]`` in ``[-1, 1]``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def sample_scenes(n: int, seed: int, scenes: list[Scene]) -> list[Scene]:
    """``n`` scenes drawn uniformly (with replacement) from ``scenes``, by ``seed``.

    Singles and pairs are drawn half and half, so one-object scenes are not 2% of the data."""
    rng = np.random.default_rng(seed)
    singles = [s for s in scenes if s.relation is None]
    pairs = [s for s in scenes if s.relation is not None]
    pools = [p for p in (singles, pairs) if p]
    which = rng.integers(len(pools), size=n)
    return [pools[w][rng.integers(len(pools[w]))] for w in which]


def scene_images(scenes: list[Scene], seed: int) -> torch.Tensor:
    """Flow-space images ``[N, 3, 32, 32]`` of ``scenes``."""
    return to_flow(render_many(scenes, seed))
