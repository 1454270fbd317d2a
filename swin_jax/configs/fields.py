"""Config fields that every model family's config shares: image and window sizes as pairs
(`to_pair`, `IntPair`), the activation remat choices (`REMAT_CHOICES`) and the MLP activations
(`ACTIVATIONS`).
"""
from __future__ import annotations

from typing import Union

from swin_jax.arguments import InputError

IntPair = tuple[int, int]


def to_pair(value: Union[int, tuple[int, int], list[int]]) -> IntPair:
    """`7` -> `(7, 7)`; a pair is returned as a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError(f"expected an int or a pair (h, w), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


# Activation rematerialisation (`remat` of a model config): what the backward pass recomputes
# instead of keeping from the forward pass. "block": each transformer block (and Swin's patch
# embedding and patch merging layers) keeps only its input and is run again in the backward pass
# (memory per block ~ its input; one more forward pass of compute); "attention": only the
# attention module of each block is recomputed (its qkv, its (heads, N, N) scores and
# probabilities, its output projection are not kept); "none": everything is kept.
REMAT_CHOICES = ("none", "block", "attention")
# MLP activations of the ViT (timm's act_layer names): the exact GELU, OpenAI CLIP's QuickGELU,
# and the tanh-approximated GELU
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")


def _check_remat(value: str) -> None:
    if value not in REMAT_CHOICES:
        raise InputError(f"remat must be one of {REMAT_CHOICES}, got {value!r}")
