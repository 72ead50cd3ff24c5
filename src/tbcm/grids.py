"""Sample grids as PNG: images in rows (prompts) and columns (seeds), panels side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .atomic import atomic_write


def grid_image(images: torch.Tensor, rows: int, scale: int = 4, pad: int = 1) -> Image.Image:
    """``images`` ``[rows * cols, C, H, W]`` in ``[-1, 1]`` (row-major) -> one PIL image."""
    n, c, h, w = images.shape
    cols = n // rows
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    arr = arr.repeat(scale, axis=2).repeat(scale, axis=3)
    hs, ws = h * scale, w * scale
    canvas = np.full((rows * (hs + pad) + pad, cols * (ws + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(rows * cols):
        r, col = divmod(i, cols)
        y, x = pad + r * (hs + pad), pad + col * (ws + pad)
        canvas[y:y + hs, x:x + ws] = arr[i].transpose(1, 2, 0)
    mode = "L" if c == 1 else "RGB"
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas[..., :3], mode)


def panels(named: list[tuple[str, Image.Image]], line_height: int = 12, gap: int = 8) -> Image.Image:
    """Place titled panels side by side (e.g. teacher 16 steps | student 1 | 2 | 4 steps); a title
    may hold several lines (``\\n``), the caption under the first."""
    width = sum(im.width for _, im in named) + gap * (len(named) - 1)
    title_height = line_height * max(title.count("\n") + 1 for title, _ in named) + 2
    height = max(im.height for _, im in named) + title_height
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for title, im in named:
        for i, line in enumerate(title.split("\n")):
            draw.text((x + 2, 1 + i * line_height), line, fill="black")
        out.paste(im.convert("RGB"), (x, title_height))
        x += im.width + gap
    return out


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write atomically: an existing PNG is never left half-written."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
