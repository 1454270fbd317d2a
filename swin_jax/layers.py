"""Building blocks shared by the ViT and Swin models, set to PyTorch's numerics.

Flax defaults that differ from PyTorch are fixed here once: LayerNorm uses a two-pass variance
and the model's eps, GELU is the exact erf form, and parameters stay float32 whatever the
compute dtype. LayerNorm, the MLP and the attention core have written-out backward passes that
keep for the backward only what torch keeps (docs/PERFORMANCE.md has what each one measured).
Where a backend runs the same maths faster another way (GPUs: cuDNN's fused attention for bf16
ViT, the GELU's erf form, optimization barriers), small per-backend tables choose it.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def trunc_normal(std: float) -> Callable[..., jax.Array]:
    """Normal(0, std) truncated at +-2 std, the usual ViT/Swin weight init."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


def Dense(features: int, use_bias: bool = True, dtype: Any = jnp.float32, name: str | None = None) -> nn.Dense:
    """nn.Dense with timm's init (trunc-normal 0.02, zero bias) and float32 params."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=trunc_normal(0.02), bias_init=nn.initializers.zeros, name=name,
    )


def _layer_norm_forward(x, scale, bias, eps, dtype):
    """flax's LayerNorm(use_fast_variance=False) operation by operation: statistics in >= fp32,
    two-pass variance, y = (x - mean) * (rsqrt(var + eps) * scale) + bias."""
    stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(stats_dtype)
    mean = xf.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(xf - mean).mean(-1, keepdims=True) + eps)
    y = (x - mean) * (rstd * scale) + bias
    return y.astype(dtype), ((xf - mean) * rstd, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, dtype: Any) -> jax.Array:
    """LayerNorm over the last axis with a written-out backward pass that keeps the normalised
    input and 1/std (as torch does). Autodiff of the same forward made XLA:CPU keep full-size
    broadcasts of `scale` and of 1/std alive for the backward pass, and run slower."""
    return _layer_norm_forward(x, scale, bias, eps, dtype)[0]


def _layer_norm_fwd(x, scale, bias, eps, dtype):
    y, (normed, rstd) = _layer_norm_forward(x, scale, bias, eps, dtype)
    return y, (normed, rstd, scale, jnp.zeros((0,), x.dtype))  # an empty array carries x's dtype


def _layer_norm_bwd(eps, dtype, residuals, d_y):
    normed, rstd, scale, x_like = residuals
    g = d_y.astype(normed.dtype)
    rows = (-1, g.shape[-1])
    d_scale = (g * normed).reshape(rows).sum(0).astype(scale.dtype)
    d_bias = g.reshape(rows).sum(0).astype(scale.dtype)
    d_normed = g * scale
    d_x = rstd * (d_normed - d_normed.mean(-1, keepdims=True)
                  - normed * (d_normed * normed).mean(-1, keepdims=True))
    return d_x.astype(x_like.dtype), d_scale, d_bias


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm: flax's parameters (`scale`, `bias`, float32) and numerics (two-pass
    variance, statistics always in >= float32), computed by `layer_norm`."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return layer_norm(x, scale, bias, self.eps, self.dtype)


def identity_product(x: jax.Array) -> jax.Array:
    """`x` again, computed as an exact product with a 16 x 16 identity matrix. Being a matmul,
    XLA neither fuses it into its consumers nor merges it (CSE) with the same expression elsewhere.

    It costs 2 x 16 FLOPs per element. An inf in `x` turns its row of 16 into NaN (inf * 0)."""
    width = 16 if x.size % 16 == 0 else 1
    rows = x.reshape(-1, width)
    eye = jnp.eye(width, dtype=x.dtype)
    out = jax.lax.dot(rows, eye, precision=jax.lax.Precision.HIGHEST, preferred_element_type=x.dtype)
    return out.reshape(x.shape)


# How a value is computed once into its own buffer, per backend: XLA:CPU drops
# jax.lax.optimization_barrier, so there it is an exact identity matmul; XLA:GPU keeps the
# barrier and so saves the matmul's extra read and write of the array (ViT-B/16 train step
# +2.5% on an H100: docs/PERFORMANCE.md). Others: the matmul.
MATERIALIZE_BY_BACKEND: dict[str, Callable[[jax.Array], jax.Array]] = {"gpu": jax.lax.optimization_barrier}


def materialize(x: jax.Array) -> jax.Array:
    """`x`, computed once into a buffer: XLA neither fuses (and re-computes) it into each of its
    consumers nor merges it with the same expression elsewhere. Exact."""
    return MATERIALIZE_BY_BACKEND.get(jax.default_backend(), identity_product)(x)


@jax.custom_vjp
def materialize_cotangent(x: jax.Array) -> jax.Array:
    """Identity. In the backward pass, the cotangent arriving here is computed once into a
    buffer before it flows on."""
    return x


def _materialize_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return x, None


def _materialize_bwd(_: None, cotangent: jax.Array) -> tuple[jax.Array]:
    # Without this XLA:CPU fuses the residual stream's cotangent (an elementwise chain growing
    # by one block at a time) into every block's backward fusions and re-computes it there:
    # quadratic in depth. By the time a cotangent holds an inf the step has failed anyway.
    return (materialize(cotangent),)


materialize_cotangent.defvjp(_materialize_fwd, _materialize_bwd)


# torch.nn.GELU() is the exact GELU, two exact ways of writing it:
#   erfc form, jax.nn.gelu's: 0.5 x erfc(-x / sqrt 2). On XLA:CPU. (The erf form there ran the
#     GELU ~40% faster in training but made fp32 results depend on how the batch is split over
#     devices: a 4-device run moved 1.8e-5 from the 1-device run, this form 5.5e-6; bound 1e-5.)
#   erf form, torch's own: 0.5 x (1 + erf(x / sqrt 2)). On GPUs, where XLA's erfc costs more:
#     measured on an H100, bf16, ViT-B/16 batch 128, forward 6715 -> 7497 img/s, train step
#     2238 -> 2317 img/s (docs/PERFORMANCE.md; measured computing in bf16, now in float32 as
#     torch does, which the bf16 tails need; not re-measured since).


def _at_least_float32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def gelu_erfc(x: jax.Array) -> jax.Array:
    """The exact GELU as 0.5 x erfc(-x / sqrt 2) (jax.nn.gelu with approximate=False), computed
    in >= float32 as torch's kernels do (bf16 results then come out correctly rounded)."""
    return jax.nn.gelu(_at_least_float32(x), approximate=False).astype(x.dtype)


def gelu_erfc_derivative(x: jax.Array) -> jax.Array:
    """d gelu_erfc / dx as autodiff forms it, in >= float32."""
    x32 = _at_least_float32(x)
    sqrt_half = np.sqrt(0.5).astype(x32.dtype)
    return (0.5 * jax.lax.erfc(-x32 * sqrt_half) + x32 * (sqrt_half / np.sqrt(np.pi)).astype(x32.dtype)
            * jnp.exp(-jnp.square(x32 * sqrt_half))).astype(x.dtype)


def gelu_erf(x: jax.Array) -> jax.Array:
    """The exact GELU as torch writes it, 0.5 x (1 + erf(x / sqrt 2)), computed in >= float32
    as torch's kernels do: in bfloat16, 1 + erf rounds to 0 for x below about -2.5."""
    x32 = _at_least_float32(x)
    return (0.5 * x32 * (1 + jax.lax.erf(x32 * np.sqrt(0.5).astype(x32.dtype)))).astype(x.dtype)


def gelu_erf_derivative(x: jax.Array) -> jax.Array:
    """d gelu_erf / dx: 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi), in >= float32."""
    x32 = _at_least_float32(x)
    sqrt_half = np.sqrt(0.5).astype(x32.dtype)
    return (0.5 * (1 + jax.lax.erf(x32 * sqrt_half)) + x32 * (sqrt_half / np.sqrt(np.pi)).astype(x32.dtype)
            * jnp.exp(-jnp.square(x32 * sqrt_half))).astype(x.dtype)


# Chosen by JAX's default backend at trace time: a program placed on another backend (a CPU
# computation on a GPU host) gets the default backend's form, the same function either way.
GELU_BY_BACKEND = {"gpu": (gelu_erf, gelu_erf_derivative)}  # others: the erfc form (see above)


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU (torch.nn.GELU()), in the form that measured fastest on JAX's default backend."""
    return GELU_BY_BACKEND.get(jax.default_backend(), (gelu_erfc, gelu_erfc_derivative))[0](x)


def gelu_derivative(x: jax.Array) -> jax.Array:
    """d gelu / dx, written for the same form `gelu` uses on this backend."""
    return GELU_BY_BACKEND.get(jax.default_backend(), (gelu_erfc, gelu_erfc_derivative))[1](x)


def _linear(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """x @ kernel + bias over the last axis of x, as nn.Dense computes it."""
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias


def _rows(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1])


def _not_before(x: jax.Array, other: jax.Array) -> jax.Array:
    """`x`, as a value XLA can only compute once `other` (same leading shape) exists.

    The backward pass re-computes from a forward value; without this XLA either merges the
    re-computation with the forward's (CSE) or schedules it early, and the result stays alive
    from the forward pass on: the memory the re-computation was meant to save. Exact: a row
    comes out zero only where `other` holds a NaN, and that NaN reaches the gradient anyway.
    (jax.lax.optimization_barrier would say this directly, but XLA:CPU drops it.)"""
    first = other[..., :1]
    return jnp.where(first == first, x, jnp.zeros_like(x))


@jax.custom_vjp
def mlp_core(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array) -> jax.Array:
    """gelu(x @ w1 + b1) @ w2 + b2 over the last axis of x, keeping for the backward pass only
    x and the hidden pre-activation (torch keeps those plus the GELU output). The GELU and its
    derivative are re-computed in the backward pass; autodiff on XLA:CPU kept four hidden-size
    buffers per block alive instead of one (GELU output, erfc and exp terms, fc1 before bias):
    about 520 MiB of a Swin-T train step's peak at batch 8."""
    return _linear(gelu(_linear(x, w1, b1)), w2, b2)


def _mlp_core_fwd(x, w1, b1, w2, b2):
    hidden = _linear(x, w1, b1)
    return _linear(gelu(hidden), w2, b2), (x, hidden, w1, w2)


def _mlp_core_bwd(residuals, d_out):
    x, hidden, w1, w2 = residuals
    hidden = _not_before(hidden, d_out)
    d_out_rows = _rows(d_out)
    d_w2 = _rows(gelu(hidden)).T @ d_out_rows
    d_hidden = (d_out @ w2.T) * gelu_derivative(hidden)
    # computed once for its three consumers (see materialize_cotangent)
    d_hidden_rows = materialize(_rows(d_hidden))
    d_x = (d_hidden_rows @ w1.T).reshape(x.shape)
    return d_x, _rows(x).T @ d_hidden_rows, d_hidden_rows.sum(axis=0), d_w2, d_out_rows.sum(axis=0)


mlp_core.defvjp(_mlp_core_fwd, _mlp_core_bwd)


def _batched_matmul(a: jax.Array, b: jax.Array, contract_a: int, contract_b: int) -> jax.Array:
    """Matrix products over a leading batch axis of rank-3 arrays, contracting the given axes."""
    return jax.lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((0,), (0,))))


def _add_bias(scores: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
    """scores (B * heads, N, N) + bias (G, heads, N, N), the batch laid out (B / G, G, heads)."""
    if bias is None:
        return scores
    groups, heads, n, m = bias.shape
    return (scores.reshape(-1, groups, heads, n, m) + bias).reshape(scores.shape)


@jax.custom_vjp
def attention_core(q: jax.Array, k: jax.Array, v: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
    """softmax(q·kᵀ + bias)·v on (B * heads, N, head_dim) arrays; q is already scaled.

    Every product is a plain batched matmul and the backward pass is written out (softmax and
    bias gradients), which XLA:CPU runs about twice as fast as the differentiated forward.
    The softmax runs in >= fp32. `bias` is (G, heads, N, N) or None (see `self_attention`).
    """
    return _attention_core_fwd(q, k, v, bias)[0]


def _attention_probs(q: jax.Array, k: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
    """softmax(q·kᵀ + bias) over the last axis, computed in >= fp32 (never a bf16 softmax)."""
    softmax_dtype = jnp.promote_types(q.dtype, jnp.float32)
    scores = _add_bias(_batched_matmul(q, k, 2, 2).astype(softmax_dtype), bias)
    return jax.nn.softmax(scores, axis=-1).astype(q.dtype)


def _attention_core_fwd(q, k, v, bias):
    probs = _attention_probs(q, k, bias)
    return _batched_matmul(probs, v, 2, 1), (q, k, v, probs, bias)


def _attention_core_bwd(residuals, d_out):
    q, k, v, probs, bias = residuals
    d_v = _batched_matmul(probs, d_out, 1, 1)
    d_probs = _batched_matmul(d_out, v, 2, 2)
    # softmax backward, dS = P * (dP - rowsum(dP * P)), in the forward softmax's precision
    softmax_dtype = jnp.promote_types(q.dtype, jnp.float32)
    p, dp = probs.astype(softmax_dtype), d_probs.astype(softmax_dtype)
    d_scores = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    d_bias = None
    if bias is not None:  # the bias was broadcast over the B / G outer batch: sum it out
        d_bias = d_scores.reshape(-1, *bias.shape).sum(axis=0).astype(bias.dtype)
    d_scores = d_scores.astype(q.dtype)
    return _batched_matmul(d_scores, k, 2, 1), _batched_matmul(d_scores, q, 1, 1), d_v, d_bias


attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)


# Where bias-free (ViT) attention in bf16/fp16 runs as one fused kernel, per backend: the
# `implementation` of jax.nn.dot_product_attention. Nothing of size N x N reaches memory, as in
# torch's SDPA. ViT-B/16 bf16 train step +14% on an H100 (docs/PERFORMANCE.md). Others, and
# fp32 everywhere: `attention_core`. Read at trace time from JAX's default backend, like the
# GELU table: set it to {} to trace a bf16 ViT for the CPU of a GPU host.
FUSED_ATTENTION_BY_BACKEND: dict[str, str] = {"gpu": "cudnn"}


def fused_self_attention(qkv: jax.Array, num_heads: int, implementation: Optional[str]) -> jax.Array:
    """`self_attention` without a bias through jax.nn.dot_product_attention (B, N, 3 * D) -> (B, N, D).

    The scale head_dim**-0.5 is applied to the scores inside, as torch's SDPA does. An odd token
    count is padded by one, the padded key masked out through the sequence lengths: JAX's cuDNN
    path takes even lengths only in training (ViT's 197 tokens were refused). The padded query
    row's output and gradients are sliced off."""
    batch, n, three_dim = qkv.shape
    head_dim = three_dim // (3 * num_heads)
    qkv = qkv.reshape(batch, n, 3, num_heads, head_dim)
    lengths = None
    if n % 2:
        qkv = jnp.pad(qkv, ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))
        lengths = jnp.full((batch,), n, jnp.int32)
    out = jax.nn.dot_product_attention(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], scale=head_dim**-0.5, query_seq_lengths=lengths,
        key_value_seq_lengths=lengths, implementation=implementation)
    return out[:, :n].reshape(batch, n, num_heads * head_dim)


@functools.lru_cache(maxsize=None)
def cudnn_attention_available() -> bool:
    """Whether JAX has a CUDA GPU of compute capability >= 8.0 (Ampere on), where JAX's cuDNN
    fused attention runs. "gpu" is also the backend name of ROCm and other GPUs."""
    try:
        device = jax.devices("gpu")[0]
        if "cuda" not in str(device.client.platform_version).lower():
            return False
        major, minor = (int(v) for v in str(device.compute_capability).split(".")[:2])
        return (major, minor) >= (8, 0)
    except Exception:  # no GPU backend, or a device without these attributes
        return False


def _fused_attention_implementation(qkv: jax.Array, num_heads: int, bias: Optional[jax.Array]) -> Optional[str]:
    """The backend's fused implementation where it applies to this call, else None."""
    head_dim = qkv.shape[-1] // (3 * num_heads)
    implementation = FUSED_ATTENTION_BY_BACKEND.get(jax.default_backend())
    if implementation == "cudnn" and not cudnn_attention_available():
        return None
    if implementation and bias is None and qkv.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 \
            and head_dim <= 128:
        return implementation
    return None


def self_attention(
    qkv: jax.Array,
    num_heads: int,
    bias: Optional[jax.Array],
    dropout: Callable[[jax.Array], jax.Array],
    deterministic: bool = True,
) -> jax.Array:
    """Multi-head self-attention on a fused (B, N, 3 * D) qkv projection, as timm computes it:
    q scaled by head_dim**-0.5 before q·kᵀ, `bias` added to the scores, softmax in >= fp32
    (the fused path scales the scores instead, as torch's SDPA does).

    `bias` has shape (G, heads, N, N) and the batch is laid out (B / G, G): Swin passes one
    (relative position bias + shift mask) per window, ViT passes None. Returns (B, N, D).
    With attention dropout active (`deterministic=False`) it takes the plain autodiff path;
    bias-free bf16/fp16 attention runs fused where `FUSED_ATTENTION_BY_BACKEND` says so.
    """
    fused = _fused_attention_implementation(qkv, num_heads, bias)
    if deterministic and fused is not None:
        return fused_self_attention(qkv, num_heads, fused)
    batch, n, three_dim = qkv.shape
    head_dim = three_dim // (3 * num_heads)
    # (3, B * heads, N, head_dim): one transpose here, plain batched matmuls after it
    qkv = qkv.reshape(batch, n, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    qkv = qkv.reshape(3, batch * num_heads, n, head_dim)
    q, k, v = qkv[0] * head_dim**-0.5, qkv[1], qkv[2]
    if deterministic:
        out = attention_core(q, k, v, bias)
    else:
        out = _batched_matmul(dropout(_attention_probs(q, k, bias)), v, 2, 1)
    out = out.reshape(batch, num_heads, n, head_dim).transpose(0, 2, 1, 3)
    return out.reshape(batch, n, num_heads * head_dim)


def attention(x: jax.Array, num_heads: int, bias: Optional[jax.Array], *, qkv_bias: bool, attn_drop: float,
              proj_drop: float, dtype: Any, deterministic: bool) -> jax.Array:
    """timm's attention layer inside the calling module's `@nn.compact` method: its Dense
    layers become that module's `qkv` and `proj` (timm's `attn.qkv`, `attn.proj`)."""
    dim = x.shape[-1]
    # the qkv cotangent is assembled from the q, k, v gradients: build it once (see materialize_cotangent)
    qkv = materialize_cotangent(Dense(3 * dim, use_bias=qkv_bias, dtype=dtype, name="qkv")(x))
    dropout = functools.partial(nn.Dropout(attn_drop), deterministic=deterministic)
    attended = self_attention(qkv, num_heads, bias, dropout, deterministic or attn_drop == 0.0)
    out = Dense(dim, dtype=dtype, name="proj")(attended)
    return nn.Dropout(proj_drop)(out, deterministic=deterministic)


class DenseParams(nn.Module):
    """The kernel and bias a `Dense` layer of this width would hold (same names, init and
    float32 storage), for layers that run their own matmuls."""

    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", trunc_normal(0.02), (in_features, self.features), jnp.float32)
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout (timm's Mlp)."""

    hidden_dim: int
    drop: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        out_dim = x.shape[-1]
        w1, b1 = DenseParams(self.hidden_dim, name="fc1")(out_dim)
        w2, b2 = DenseParams(out_dim, name="fc2")(self.hidden_dim)
        x, w1, b1, w2, b2 = (t.astype(self.dtype) for t in (x, w1, b1, w2, b2))
        if deterministic or self.drop == 0.0:
            return mlp_core(x, w1, b1, w2, b2)
        x = nn.Dropout(self.drop)(gelu(_linear(x, w1, b1)), deterministic=False)
        return nn.Dropout(self.drop)(_linear(x, w2, b2), deterministic=False)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, scale survivors by 1/keep."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def check_images(x: Any, config: Any) -> None:
    """Raise a ValueError naming the problem when `x` is not a batch of NHWC float images that
    the model was built for (channels-first layout, channel count, size, rank, dtype)."""
    shape = tuple(getattr(x, "shape", ()))
    c_in = config.in_chans
    if len(shape) != 4:
        raise ValueError(f"expected a batch of NHWC images (B, H, W, {c_in}), got an array of shape {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"expected float images, got dtype {x.dtype}: convert and normalise them first")
    if shape[-1] != c_in:
        if shape[1] == c_in:
            raise ValueError(
                f"input looks channels-first (NCHW) with shape {shape}; swin_jax models take NHWC, "
                f"e.g. x.transpose(0, 2, 3, 1)"
            )
        raise ValueError(f"expected {c_in} input channels in the last axis (NHWC), got {shape[-1]} (shape {shape})")
    if tuple(shape[1:3]) != tuple(config.img_size):
        raise ValueError(
            f"model was built for {config.img_size[0]}x{config.img_size[1]} images, got "
            f"{shape[1]}x{shape[2]}; create it with img_size=({shape[1]}, {shape[2]})"
        )
