"""What torch computes, written plainly: the readable definition of each op the models use.

These are the forward formulas. JAX differentiates them as they stand (the `autodiff` kernels,
see `swin_jax.Kernels`), and the written-out backward passes of `swin_jax.backward` compute
the same forward with other bookkeeping for the gradient; the tests compare the two. The
numerics that decide parity with PyTorch are set here once: LayerNorm's statistics in >= fp32
with a two-pass variance, the exact GELU computed in >= fp32, the softmax in >= fp32.

In bfloat16 each formula rounds once, where torch's autocast does: every value an op produces
in >= fp32 (the normalised input, the GELU, a bias added to a product, the probabilities) is
also what autodiff reads back in the backward pass, so a gradient is summed in >= fp32 and
rounded to bfloat16 once. The written-out backward passes do the same; the two then agree up
to that single rounding (the tests count the elements it moves: docs/NUMERICS.md).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np


def at_least_float32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ----- LayerNorm


def layer_norm_parts(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float,
                     dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """flax's LayerNorm(use_fast_variance=False) over the last axis, operation by operation:
    statistics in >= fp32, two-pass variance, y = (x - mean) * (rsqrt(var + eps) * scale) + bias.
    Returns y (in `dtype`), the normalised input (x - mean) * rstd and rstd (in >= fp32)."""
    xf = at_least_float32(x)
    mean = xf.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(xf - mean).mean(-1, keepdims=True) + eps)
    # xf, not x, on the left: the same value, and x's gradient from its three uses is then summed
    # in >= fp32 before its one rounding back to x's dtype
    y = (xf - mean) * (rstd * scale) + bias
    return y.astype(dtype), (xf - mean) * rstd, rstd


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, dtype: Any) -> jax.Array:
    """torch.nn.LayerNorm's forward (see `layer_norm_parts`)."""
    return layer_norm_parts(x, scale, bias, eps, dtype)[0]


# ----- GELU: torch.nn.GELU() is the exact GELU; two exact ways of writing it


def gelu_erf(x: jax.Array) -> jax.Array:
    """The exact GELU as torch writes it, 0.5 x (1 + erf(x / sqrt 2)), computed in >= float32
    as torch's kernels do (in bfloat16, 1 + erf would round to 0 for x below about -2.5)."""
    x32 = at_least_float32(x)
    return (0.5 * x32 * (1 + jax.lax.erf(x32 * np.sqrt(0.5).astype(x32.dtype)))).astype(x.dtype)


def gelu_erfc(x: jax.Array) -> jax.Array:
    """The exact GELU as 0.5 x erfc(-x / sqrt 2) (jax.nn.gelu with approximate=False), computed
    in >= float32 (bf16 results then come out correctly rounded)."""
    return jax.nn.gelu(at_least_float32(x), approximate=False).astype(x.dtype)


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's QuickGELU, x * sigmoid(1.702 x) (timm's `quick_gelu`), computed in >= float32."""
    x32 = at_least_float32(x)
    return (x32 * jax.nn.sigmoid(1.702 * x32)).astype(x.dtype)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """The tanh approximation of the GELU (torch's `approximate='tanh'`, transformers'
    `gelu_pytorch_tanh`), computed in >= float32."""
    return jax.nn.gelu(at_least_float32(x), approximate=True).astype(x.dtype)


# ----- dense layers and the MLP


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """x @ kernel + bias over the last axis of x, as torch's addmm computes it: the product
    accumulated in >= fp32, the bias added to it there, the sum rounded to x's dtype once. In
    fp32 that is nn.Dense's arithmetic; in bfloat16 autodiff then also sums the bias gradient
    over the batch in >= fp32 (a bfloat16 add would have it summed in bfloat16)."""
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    product = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=accumulate)
    return (product + bias.astype(x.dtype)).astype(x.dtype)


def mlp(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array,
        gelu: Callable[[jax.Array], jax.Array] = gelu_erf,
        dropout: Callable[[jax.Array], jax.Array] = lambda h: h) -> jax.Array:
    """timm's Mlp: fc1 -> GELU -> dropout -> fc2 (the output dropout is the caller's)."""
    return linear(dropout(gelu(linear(x, w1, b1))), w2, b2)


# ----- attention


def batched_matmul(a: jax.Array, b: jax.Array, contract_a: int, contract_b: int) -> jax.Array:
    """Matrix products over a leading batch axis of rank-3 arrays, contracting the given axes."""
    return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))))


def add_bias(scores: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
    """scores (B * heads, N, N) + bias (G, heads, N, N), the batch laid out (B / G, G, heads)."""
    if bias is None:
        return scores
    groups, heads, n, m = bias.shape
    return (scores.reshape(-1, groups, heads, n, m) + bias).reshape(scores.shape)


def scale_heads(scores: jax.Array, scale: Optional[jax.Array]) -> jax.Array:
    """scores (B * heads, N, N) times a per-head `scale` (heads,), or as they are for None."""
    if scale is None:
        return scores
    heads = scale.shape[0]
    n, m = scores.shape[-2:]
    return (scores.reshape(-1, heads, n, m) * scale[:, None, None]).reshape(scores.shape)


def attention_probs(q: jax.Array, k: jax.Array, bias: Optional[jax.Array],
                    scale: Optional[jax.Array] = None) -> jax.Array:
    """softmax(q·kᵀ [· scale per head] + bias) over the last axis, computed and returned in
    >= fp32 (never a bf16 softmax); the caller rounds it to q's dtype for the product with v."""
    scores = add_bias(scale_heads(at_least_float32(batched_matmul(q, k, 2, 2)), scale), bias)
    return jax.nn.softmax(scores, axis=-1)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: Optional[jax.Array],
              dropout: Callable[[jax.Array], jax.Array] = lambda p: p,
              scale: Optional[jax.Array] = None) -> jax.Array:
    """softmax(q·kᵀ [· scale] + bias)·v on (B * heads, N, head_dim) arrays. timm's attention
    scales q before the product (pass it scaled, `scale` None); Swin V2's cosine attention
    multiplies the scores by a learned per-head `scale` (heads,) after it. `bias` is
    (G, heads, N, N) or None; `dropout` applies to the probabilities."""
    return batched_matmul(dropout(attention_probs(q, k, bias, scale).astype(q.dtype)), v, 2, 1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch's F.normalize over the last axis: x / max(||x||_2, eps), the norm in >= fp32.

    A zero row (Swin V2's keys of padded tokens: zero input, zero key bias) gets torch's
    gradient: the norm's is 0 there (torch masks it), so x's is the incoming one / eps. A plain
    sqrt would give inf * 0 = NaN, and the NaN would reach the qkv weights (through zeros)."""
    xf = at_least_float32(x)
    squares = jnp.sum(jnp.square(xf), axis=-1, keepdims=True)
    nonzero = squares > 0
    norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squares, 1.0)), 0.0)
    return (xf / jnp.maximum(norm, eps)).astype(x.dtype)
