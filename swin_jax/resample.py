"""Resizing of position embeddings exactly as timm does it, in numpy (no torch needed).

timm calls `F.interpolate(..., mode="bicubic", antialias=True)`. PyTorch's antialiased path is
separable and Pillow-style: the cubic kernel with a = -0.5 (not the -0.75 of its plain bicubic,
nor jax.image.resize's), stretched by the scale when shrinking, weights normalised per output.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def antialias_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of PyTorch's antialiased bicubic weights along one axis."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C++ does
        hi = min(int(center + support + 0.5), in_size)
        w = _cubic((np.arange(lo, hi) - center + 0.5) * invscale)
        total = w.sum()
        weights[i, lo:hi] = w / total if total != 0 else w
    return weights


def resize_bicubic_antialias(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) array to `size` like torch's bicubic interpolate with antialias=True."""
    wh = antialias_bicubic_weights(x.shape[0], size[0])
    ww = antialias_bicubic_weights(x.shape[1], size[1])
    out = np.einsum("ih,hwc->iwc", wh, x.astype(np.float64))
    return np.einsum("jw,iwc->ijc", ww, out)


def resample_pos_embed(
    pos_embed: np.ndarray,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    old_grid: Optional[tuple[int, int]] = None,
) -> np.ndarray:
    """timm's `resample_abs_pos_embed`: a (1, prefix + h*w, D) table onto a new patch grid.

    The prefix (class token) entries are kept; the grid part is resized bicubically with
    antialiasing. `old_grid` defaults to a square grid, as in timm.
    """
    pos_embed = np.asarray(pos_embed)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(math.isqrt(num_grid))
        if side * side != num_grid:
            raise ValueError(f"position embedding has {num_grid} grid entries, not a square grid: give old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != num_grid:
        raise ValueError(f"position embedding has {num_grid} grid entries, not {old_grid[0]}x{old_grid[1]}")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    resized = resize_bicubic_antialias(grid.reshape(*old_grid, dim), new_grid).reshape(1, -1, dim)
    return np.concatenate([prefix, resized.astype(pos_embed.dtype)], axis=1)
