"""Written-out backward passes (`jax.custom_vjp`) for LayerNorm, the MLP and the attention core,
and the scheduling helpers they use. The `custom_vjp` kernels of `swin_jax.Kernels`.

Each forward here is `swin_jax.reference`'s formula; what differs from JAX's own autodiff is
what is kept for the backward pass (what torch keeps) and how XLA may schedule it. On XLA:CPU
the differentiated forwards kept full-size broadcasts and intermediates alive and ran slower
(docs/PERFORMANCE.md has what each one measured). The GELU form and the way a value is computed
once into a buffer (`materialize`) are passed in by `swin_jax.kernels`, which makes the choices.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from swin_jax.reference import (at_least_float32, attention_probs, batched_matmul, gelu_erf, gelu_erfc,
                                layer_norm_parts, linear, scale_heads)

Fn = Callable[[jax.Array], jax.Array]

# ----- scheduling helpers


def identity_product(x: jax.Array) -> jax.Array:
    """`x` again, computed as a product with a 16 x 16 identity matrix. Being a matmul, XLA
    neither fuses it into its consumers nor merges it (CSE) with the same expression elsewhere.

    It costs 2 x 16 FLOPs per element. Exact for finite values; an inf in `x` turns its row of
    16 into NaN (inf * 0)."""
    width = 16 if x.size % 16 == 0 else 1
    rows = x.reshape(-1, width)
    eye = jnp.eye(width, dtype=x.dtype)
    out = jax.lax.dot(rows, eye, precision=jax.lax.Precision.HIGHEST, preferred_element_type=x.dtype)
    return out.reshape(x.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def materialize_cotangent(materialize: Fn, x: jax.Array) -> jax.Array:
    """Identity. In the backward pass, the cotangent arriving here is computed once into a
    buffer (by `materialize`) before it flows on."""
    return x


def _materialize_cotangent_fwd(materialize: Fn, x: jax.Array) -> tuple[jax.Array, None]:
    return x, None


def _materialize_cotangent_bwd(materialize: Fn, _: None, cotangent: jax.Array) -> tuple[jax.Array]:
    # Without this XLA:CPU fuses the residual stream's cotangent (an elementwise chain growing
    # by one block at a time) into every block's backward fusions and re-computes it there:
    # quadratic in depth.
    return (materialize(cotangent),)


materialize_cotangent.defvjp(_materialize_cotangent_fwd, _materialize_cotangent_bwd)


def not_before(x: jax.Array, other: jax.Array) -> jax.Array:
    """`x`, as a value XLA can only compute once `other` (same leading shape) exists.

    The backward pass re-computes from a forward value; without this XLA either merges the
    re-computation with the forward's (CSE) or schedules it early, and the result stays alive
    from the forward pass on: the memory the re-computation was meant to save. Exact: a row
    comes out zero only where `other` holds a NaN, and that NaN reaches the gradient anyway.
    (jax.lax.optimization_barrier would say this directly, but XLA:CPU drops it.)"""
    first = other[..., :1]
    return jnp.where(first == first, x, jnp.zeros_like(x))


def rows(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1])


# ----- LayerNorm


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, dtype: Any) -> jax.Array:
    """`reference.layer_norm` with a written-out backward pass that keeps the normalised input
    and 1/std (as torch does). Autodiff of the same forward made XLA:CPU keep full-size
    broadcasts of `scale` and of 1/std alive for the backward pass, and run slower."""
    return layer_norm_parts(x, scale, bias, eps, dtype)[0]


def _layer_norm_fwd(x, scale, bias, eps, dtype):
    y, normed, rstd = layer_norm_parts(x, scale, bias, eps, dtype)
    return y, (normed, rstd, scale, jnp.zeros((0,), x.dtype))  # an empty array carries x's dtype


def _layer_norm_bwd(eps, dtype, residuals, d_y):
    normed, rstd, scale, x_like = residuals
    g = d_y.astype(normed.dtype)
    d_scale = rows(g * normed).sum(0).astype(scale.dtype)
    d_bias = rows(g).sum(0).astype(scale.dtype)
    d_normed = g * scale
    d_x = rstd * (d_normed - d_normed.mean(-1, keepdims=True)
                  - normed * (d_normed * normed).mean(-1, keepdims=True))
    return d_x.astype(x_like.dtype), d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


# ----- GELU derivatives, for the MLP's backward pass


def gelu_erfc_derivative(x: jax.Array) -> jax.Array:
    """d gelu_erfc / dx as autodiff forms it, computed and returned in >= float32 (the MLP's
    backward multiplies it into the cotangent before rounding, as autodiff does)."""
    x32 = at_least_float32(x)
    sqrt_half = np.sqrt(0.5).astype(x32.dtype)
    return (0.5 * jax.lax.erfc(-x32 * sqrt_half) + x32 * (sqrt_half / np.sqrt(np.pi)).astype(x32.dtype)
            * jnp.exp(-jnp.square(x32 * sqrt_half)))


def gelu_erf_derivative(x: jax.Array) -> jax.Array:
    """d gelu_erf / dx: 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi), computed and
    returned in >= float32."""
    x32 = at_least_float32(x)
    sqrt_half = np.sqrt(0.5).astype(x32.dtype)
    return (0.5 * (1 + jax.lax.erf(x32 * sqrt_half)) + x32 * (sqrt_half / np.sqrt(np.pi)).astype(x32.dtype)
            * jnp.exp(-jnp.square(x32 * sqrt_half)))


def quick_gelu_derivative(x: jax.Array) -> jax.Array:
    """d quick_gelu / dx: s + 1.702 x s (1 - s) with s = sigmoid(1.702 x), in >= float32."""
    x32 = at_least_float32(x)
    s = jax.nn.sigmoid(1.702 * x32)
    return s + 1.702 * x32 * s * (1 - s)


def gelu_tanh_derivative(x: jax.Array) -> jax.Array:
    """d gelu_tanh / dx for 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), in >= float32."""
    x32 = at_least_float32(x)
    c = np.sqrt(2 / np.pi).astype(x32.dtype)
    t = jnp.tanh(c * (x32 + 0.044715 * x32 ** 3))
    return 0.5 * (1 + t) + 0.5 * x32 * (1 - t * t) * c * (1 + 3 * 0.044715 * x32 * x32)


GELU_DERIVATIVES: dict[Fn, Fn] = {gelu_erf: gelu_erf_derivative, gelu_erfc: gelu_erfc_derivative}


# ----- the MLP


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def mlp_core(gelu: Fn, gelu_derivative: Fn, materialize: Fn, x: jax.Array, w1: jax.Array, b1: jax.Array,
             w2: jax.Array, b2: jax.Array) -> jax.Array:
    """gelu(x @ w1 + b1) @ w2 + b2 over the last axis of x, keeping for the backward pass only
    x and the hidden pre-activation (torch keeps those plus the GELU output). The GELU and its
    derivative are re-computed in the backward pass; autodiff on XLA:CPU kept four hidden-size
    buffers per block alive instead of one (GELU output, erfc and exp terms, fc1 before bias):
    about 520 MiB of a Swin-T train step's peak at batch 8."""
    return linear(gelu(linear(x, w1, b1)), w2, b2)


def _mlp_core_fwd(gelu, gelu_derivative, materialize, x, w1, b1, w2, b2):
    hidden = linear(x, w1, b1)
    return linear(gelu(hidden), w2, b2), (x, hidden, w1, w2)


def _mlp_core_bwd(gelu, gelu_derivative, materialize, residuals, d_out):
    x, hidden, w1, w2 = residuals
    hidden = not_before(hidden, d_out)
    d_out_rows = rows(d_out)
    d_w2 = rows(gelu(hidden)).T @ d_out_rows
    # the product in >= fp32, rounded once (autodiff multiplies the GELU's derivative in the
    # precision the GELU was computed in)
    d_hidden = (at_least_float32(d_out @ w2.T) * gelu_derivative(hidden)).astype(hidden.dtype)
    # computed once for its three consumers (see materialize_cotangent)
    d_hidden_rows = materialize(rows(d_hidden))
    d_x = (d_hidden_rows @ w1.T).reshape(x.shape)
    return d_x, rows(x).T @ d_hidden_rows, d_hidden_rows.sum(axis=0), d_w2, d_out_rows.sum(axis=0)


mlp_core.defvjp(_mlp_core_fwd, _mlp_core_bwd)


# ----- the attention core


@jax.custom_vjp
def attention_core(q: jax.Array, k: jax.Array, v: jax.Array, bias: Optional[jax.Array],
                   scale: Optional[jax.Array] = None) -> jax.Array:
    """`reference.attention` (softmax(q·kᵀ [· scale per head] + bias)·v on (B * heads, N,
    head_dim) arrays, softmax in >= fp32) with its backward pass written out (softmax, bias and
    scale gradients), which XLA:CPU runs about twice as fast as the differentiated forward."""
    return _attention_core_fwd(q, k, v, bias, scale)[0]


def _attention_core_fwd(q, k, v, bias, scale):
    # the probabilities are kept as the softmax made them (>= fp32): the softmax's backward
    # reads them unrounded, as autodiff's and torch's do; in bf16 that keeps 4 bytes per score
    # instead of 2
    probs = attention_probs(q, k, bias, scale)
    return batched_matmul(probs.astype(q.dtype), v, 2, 1), (q, k, v, probs, bias, scale)


def _attention_core_bwd(residuals, d_out):
    q, k, v, p, bias, scale = residuals
    d_v = batched_matmul(p.astype(q.dtype), d_out, 1, 1)
    # softmax backward, dS = P * (dP - rowsum(P * dP)) in the softmax's precision, written as
    # autodiff transposes jax.nn.softmax's rule (P dP - P rowsum(P dP)): the same roundings
    p_dp = p * at_least_float32(batched_matmul(d_out, v, 2, 2))
    d_scores = p_dp - p * p_dp.sum(axis=-1, keepdims=True)
    d_bias = d_scale = None
    if bias is not None:  # the bias was broadcast over the B / G outer batch: sum it out
        d_bias = d_scores.reshape(-1, *bias.shape).sum(axis=0).astype(bias.dtype)
    if scale is not None:  # scores = product * scale: the product re-computed for the scale's gradient
        heads, (n, m) = scale.shape[0], d_scores.shape[-2:]
        product = at_least_float32(batched_matmul(not_before(q, d_out), k, 2, 2)).reshape(-1, heads, n, m)
        d_scale = (d_scores.reshape(-1, heads, n, m) * product).sum(axis=(0, 2, 3)).astype(scale.dtype)
        d_scores = scale_heads(d_scores, scale)
    d_scores = d_scores.astype(q.dtype)
    return batched_matmul(d_scores, k, 2, 1), batched_matmul(d_scores, q, 1, 1), d_v, d_bias, d_scale


attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)
