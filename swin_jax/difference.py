"""The one difference measure of the parity checks and the test suite, blind to nothing.

`relative_difference` is max|ours - ref| / max(floor, max|ref|). Python's `max` and numpy's
`max` both let a NaN through or drop it depending on where it stands, so every non-finite value
(NaN or inf, on either side) makes the measure inf: a comparison that met a non-finite number
never reads as a pass. `nonfinite` says how many there are and where the first one is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class NonFinite:
    """How many NaN / inf values an array holds and the index of the first one."""

    count: int
    first: Optional[tuple[int, ...]]
    size: int

    def __str__(self) -> str:
        return f"{self.count} of {self.size} non-finite, first at {self.first}" if self.count else "all finite"


def nonfinite(array: Any) -> NonFinite:
    """Count the NaN / inf values of `array` and find the first (row-major order)."""
    array = np.asarray(array)
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape)) if count else None
    return NonFinite(count, first, int(array.size))


def relative_difference(reference: Any, ours: Any, floor: float = 1.0) -> float:
    """max|ours - ref| / max(floor, max|ref|), in float64.

    Floor 1 is the forward tolerance's measure (absolute for outputs of magnitude below 1);
    floor 0 is plainly relative (gradients, trained params), and where the reference is all zero
    it is max|ours|. Any NaN or inf on either side gives inf; different shapes raise a
    ValueError."""
    reference, ours = np.asarray(reference, np.float64), np.asarray(ours, np.float64)
    if reference.shape != ours.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, ours {ours.shape}")
    if reference.size == 0:
        return 0.0
    if not (np.isfinite(reference).all() and np.isfinite(ours).all()):
        return math.inf
    diff, scale = float(np.abs(reference - ours).max()), max(floor, float(np.abs(reference).max()))
    return diff / scale if scale > 0 else diff

