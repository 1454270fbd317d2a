"""The Flax modules shared by the ViT and Swin models, with PyTorch's parameters and numerics.

Flax defaults that differ from PyTorch are fixed here once: LayerNorm uses a two-pass variance
and the model's eps, the GELU is exact (never the tanh approximation), and parameters stay
float32 whatever the compute dtype. The maths is `swin_jax.reference`'s; which implementation
runs each op (written-out backward passes, fused attention, autodiff) is the model's `Kernels`
setting, resolved by `swin_jax.kernels`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from swin_jax import kernels as K
from swin_jax.configs import Kernels
from swin_jax.arguments import InputError


def trunc_normal(std: float) -> Callable[..., jax.Array]:
    """Normal(0, std) truncated at +-2 std, the usual ViT/Swin weight init."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)

    return init


@functools.lru_cache(maxsize=None)
def _rematted(module_cls: type, static_argnums: tuple[int, ...]) -> type:
    return nn.remat(module_cls, static_argnums=static_argnums)


def remat_if(enabled: bool, module_cls: type, static_argnums: tuple[int, ...]) -> type:
    """`module_cls`, or with `enabled` the same module under `nn.remat` (`jax.checkpoint`): its
    activations are recomputed in the backward pass instead of kept. Parameter names and values
    do not change. `static_argnums` counts the module as argument 0 (flags such as
    `deterministic`, which select a program, are static)."""
    return _rematted(module_cls, static_argnums) if enabled else module_cls


def Dense(features: int, use_bias: bool = True, dtype: Any = jnp.float32, name: str | None = None) -> nn.Dense:
    """nn.Dense with timm's init (trunc-normal 0.02, zero bias) and float32 params."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=trunc_normal(0.02), bias_init=nn.initializers.zeros, name=name,
    )


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm: flax's parameters (`scale`, `bias`, float32) and numerics (two-pass
    variance, statistics always in >= float32)."""

    eps: float
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()
    scale_init: Callable[..., jax.Array] = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return K.layer_norm(x, scale, bias, self.eps, self.dtype, self.kernels)


def attention(x: jax.Array, num_heads: int, bias: Optional[jax.Array], *, qkv_bias: bool, attn_drop: float,
              proj_drop: float, dtype: Any, deterministic: bool, kernels: Kernels,
              qk_norm_eps: Optional[float] = None) -> jax.Array:
    """timm's attention layer inside the calling module's `@nn.compact` method: its Dense
    layers become that module's `qkv` and `proj` (timm's `attn.qkv`, `attn.proj`). `bias` is
    (G, heads, N, N) or None (see `swin_jax.kernels.self_attention`). With `qk_norm_eps`, q and
    k are layer-normalised over each head's channels before the scaling (`q_norm`, `k_norm`)."""
    dim = x.shape[-1]
    # the qkv cotangent is assembled from the q, k, v gradients: build it once
    qkv = K.materialize_cotangent(Dense(3 * dim, use_bias=qkv_bias, dtype=dtype, name="qkv")(x), kernels)
    if qk_norm_eps is not None:
        q, k, v = jnp.split(qkv.reshape(*qkv.shape[:-1], 3, num_heads, dim // num_heads), 3, axis=-3)
        q = LayerNorm(qk_norm_eps, dtype, kernels, name="q_norm")(q)
        k = LayerNorm(qk_norm_eps, dtype, kernels, name="k_norm")(k)
        qkv = jnp.concatenate([q, k, v], axis=-3).reshape(qkv.shape)
    attn_dropout = nn.Dropout(attn_drop)  # created either way: the names of later modules stay put
    dropout = None if deterministic or attn_drop == 0.0 else functools.partial(attn_dropout, deterministic=False)
    attended = K.self_attention(qkv, num_heads, bias, kernels, dropout)
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
    """fc1 -> activation (the exact GELU by default) -> dropout -> fc2 -> dropout (timm's Mlp)."""

    hidden_dim: int
    drop: float = 0.0
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()
    act_layer: str = "gelu"  # configs.ACTIVATIONS

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        out_dim = x.shape[-1]
        w1, b1 = DenseParams(self.hidden_dim, name="fc1")(out_dim)
        w2, b2 = DenseParams(out_dim, name="fc2")(self.hidden_dim)
        x, w1, b1, w2, b2 = (t.astype(self.dtype) for t in (x, w1, b1, w2, b2))
        if deterministic or self.drop == 0.0:
            return K.mlp(x, w1, b1, w2, b2, self.kernels, act_layer=self.act_layer)
        hidden_dropout = functools.partial(nn.Dropout(self.drop), deterministic=False)
        return nn.Dropout(self.drop)(K.mlp(x, w1, b1, w2, b2, self.kernels, hidden_dropout, self.act_layer),
                                     deterministic=False)


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
    the model was built for (channels-first layout, channel count, size, rank, dtype). A ViT with
    `dynamic_img_size` takes any size that its patch divides."""
    shape = tuple(getattr(x, "shape", ()))
    c_in = config.in_chans
    if len(shape) != 4:
        raise InputError(f"expected a batch of NHWC images (B, H, W, {c_in}), got an array of shape {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"expected float images, got dtype {x.dtype}: convert and normalise them first")
    if shape[-1] != c_in:
        if shape[1] == c_in:
            raise InputError(
                f"input looks channels-first (NCHW) with shape {shape}; swin_jax models take NHWC, "
                f"e.g. x.transpose(0, 2, 3, 1)"
            )
        raise InputError(f"expected {c_in} input channels in the last axis (NHWC), got {shape[-1]} (shape {shape})")
    if getattr(config, "dynamic_img_size", False):
        if any(s % config.patch_size for s in shape[1:3]):
            raise InputError(f"image size {shape[1]}x{shape[2]} is not a multiple of the patch size "
                             f"{config.patch_size}")
    elif tuple(shape[1:3]) != tuple(config.img_size):
        raise InputError(
            f"model was built for {config.img_size[0]}x{config.img_size[1]} images, got "
            f"{shape[1]}x{shape[2]}; create it with img_size=({shape[1]}, {shape[2]})"
        )
