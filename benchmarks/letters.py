"""The letters data: 16x16 RGB renders of ten capital letters in the fonts matplotlib ships, on
random colours.  The third benchmark teacher (neither the digits nor the scenes) trains on it
with the library's own commands; its judge trains on other renders; the FID reference is a third
set of renders.  Nothing here is special to tbcm: it writes ``.npz`` files that ``tbcm teacher
train --data`` and ``tbcm judge train`` read like any user's labelled images.

    python benchmarks/letters.py --out runs/letters          # train.npz, judge.npz, reference.npz
    tbcm teacher train --out benchmarks/teachers/letters --data runs/letters/train.npz \\
        --config configs/teacher_letters.yaml
    tbcm judge train --data runs/letters/judge.npz --reference runs/letters/reference.npz \\
        --floor runs/letters/train.npz --prompt-template "the letter {label}" \\
        --out benchmarks/teachers/letters/judge
    cp runs/letters/prompts.txt benchmarks/teachers/letters/

The teacher, its judge and its prompts are committed (benchmarks/teachers/letters), so the pinned
suite ``benchmarks/suites/letters_default.yaml`` runs from a clean clone.

Each image: one letter (the label) in one of 8 bold faces (DejaVu Sans / Serif / Mono and STIX, each
upright and slanted), at a random size, offset and rotation (up to 10 degrees), in a
random colour on a random background colour of a clearly different brightness; drawn at 64x64 and
box-filtered to 16x16, so edges are anti-aliased as in a photograph of print.  The three sets are
drawn from one distribution with disjoint seeds: never the same image.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = "ABCEHKMRSX"
SIZE = 16
CANVAS = 64
SETS = {"train": (20000, 1), "judge": (10000, 2), "reference": (2000, 3)}  # images, seed
# bold faces only: at 16x16 a regular stroke is under a pixel wide (a first teacher trained on all
# 16 faces with rotations to 15 degrees drew speckled, barely legible letters after 6,000 steps)
FACES = ["DejaVuSans-Bold", "DejaVuSans-BoldOblique", "DejaVuSerif-Bold", "DejaVuSerif-BoldItalic",
         "DejaVuSansMono-Bold", "DejaVuSansMono-BoldOblique", "STIXGeneralBol", "STIXGeneralBolIta"]


def _font_path(face: str) -> str:
    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{face}.ttf")


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(letter, background) RGB: any hues, brightness at least 0.35 apart."""
    while True:
        v_bg, v_fg = rng.uniform(0.15, 0.95, 2)
        if abs(v_bg - v_fg) >= 0.35:
            break
    h_bg = rng.uniform()
    h_fg = (h_bg + rng.uniform(0.2, 0.8)) % 1.0
    bg = colorsys.hsv_to_rgb(h_bg, rng.uniform(0.2, 0.9), v_bg)
    fg = colorsys.hsv_to_rgb(h_fg, rng.uniform(0.3, 1.0), v_fg)
    return tuple(int(255 * c) for c in fg), tuple(int(255 * c) for c in bg)


def render(label: int, rng: np.random.Generator, fonts: dict) -> np.ndarray:
    """One ``[16, 16, 3]`` uint8 image of ``LETTERS[label]``."""
    fg, bg = _colours(rng)
    face = FACES[rng.integers(len(FACES))]
    size = int(rng.integers(44, 56))
    font = fonts.setdefault((face, size), ImageFont.truetype(_font_path(face), size))
    glyph = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(glyph)
    dx, dy = rng.integers(-4, 5, 2)
    draw.text((CANVAS / 2 + dx, CANVAS / 2 + dy), LETTERS[label], font=font, fill=255, anchor="mm")
    glyph = glyph.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC)
    image = Image.composite(Image.new("RGB", glyph.size, fg), Image.new("RGB", glyph.size, bg), glyph)
    return np.asarray(image.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8)


def render_set(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images ``[N, 16, 16, 3]`` uint8 and their letters ``[N]`` (strings), classes balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(LETTERS)
    rng.shuffle(labels)
    fonts: dict = {}
    images = np.stack([render(int(y), rng, fonts) for y in labels])
    return images, np.array([LETTERS[y] for y in labels])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for train.npz, judge.npz, reference.npz, prompts.txt")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (count, seed) in SETS.items():
        images, labels = render_set(count, seed)
        np.savez_compressed(out / f"{name}.npz", images=images, labels=labels)
        print(f"{out / (name + '.npz')}: {count} images {images.shape[1:]}, seed {seed}")
    (out / "prompts.txt").write_text("".join(f"the letter {c}\n" for c in LETTERS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
