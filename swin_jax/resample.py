"""Resizing of position embeddings exactly as timm does it, in numpy (no torch needed).

timm calls `F.interpolate(..., mode="bicubic", antialias=True)`. PyTorch's antialiased path is
separable and Pillow-style: the cubic kernel with a = -0.5 (not the -0.75 of its plain bicubic,
nor jax.image.resize's), stretched by the scale when shrinking, weights normalised per output.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from swin_jax.arguments import InputError


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
            raise InputError(f"position embedding has {num_grid} grid entries, not a square grid: give old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != num_grid:
        raise InputError(f"position embedding has {num_grid} grid entries, not {old_grid[0]}x{old_grid[1]}")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    resized = resize_bicubic_antialias(grid.reshape(*old_grid, dim), new_grid).reshape(1, -1, dim)
    return np.concatenate([prefix, resized.astype(pos_embed.dtype)], axis=1)


def _geometric_positions(src: int, dst: int) -> np.ndarray:
    """Source sample positions of timm's (BEiT's) table resize: spaced by a geometric progression
    whose ratio is found by bisection, so that the outermost source row lands near dst // 2."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis)


def _linear_weights(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(len(targets), len(points)) weights of timm's RegularGridInterpolator along one axis:
    linear between the neighbouring points, clamped to the ends."""
    right = np.minimum(np.searchsorted(points, targets, side="left"), len(points) - 1)
    left = np.clip(right - 1, 0, len(points) - 1)
    d_left = np.maximum(targets - points[left], 0.0)
    d_right = np.maximum(points[right] - targets, 0.0)
    both_zero = (d_left == 0) & (d_right == 0)
    d_left, d_right = np.where(both_zero, 1.0, d_left), np.where(both_zero, 1.0, d_right)
    weights = np.zeros((len(targets), len(points)))
    rows = np.arange(len(targets))
    np.add.at(weights, (rows, left), d_right / (d_left + d_right))
    np.add.at(weights, (rows, right), d_left / (d_left + d_right))
    return weights


def resize_rel_pos_bias_table(table: np.ndarray, new_window: tuple[int, int]) -> np.ndarray:
    """timm's `resize_rel_pos_bias_table` (its default, scipy-free path): a Swin relative position
    bias table ((2w-1)^2, heads) of a square source window onto `new_window`."""
    table = np.asarray(table)
    entries, heads = table.shape
    side = int(math.isqrt(entries))
    if side * side != entries:
        raise InputError(f"relative position bias table of {entries} entries is not a square window's")
    dst = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if (side, side) == dst:
        return table
    wy = _linear_weights(_geometric_positions(side, dst[0]), np.arange(-(dst[0] // 2), dst[0] // 2 + 0.1))
    wx = _linear_weights(_geometric_positions(side, dst[1]), np.arange(-(dst[1] // 2), dst[1] // 2 + 0.1))
    grid = table.astype(np.float64).reshape(side, side, heads)
    out = np.einsum("yh,xw,hwc->yxc", wy, wx, grid)
    return out.reshape(-1, heads).astype(table.dtype)
