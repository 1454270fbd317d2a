"""Swin Transformer V2 in Flax linen, numerically identical to timm's `SwinTransformerV2`.

What V2 changes from V1 (`swin_jax.swin`, whose window operations, geometry, patch embedding
and head it reuses): scaled cosine attention (q and k L2-normalised, the scores times a learned
per-head `exp(logit_scale)` clamped at 100, no 1/sqrt(head_dim)); a continuous position bias
(an MLP on log-spaced relative coordinates, `16 * sigmoid` of its output); q and v biases with a
zero key bias; residual post-norm blocks (the norm after attention and after the MLP, inside the
residual branch); patch merging that reduces, then normalises. Parameter names follow timm's
state_dict (`layers_0/blocks_0/attn/cpb_mlp_0` is `layers.0.blocks.0.attn.cpb_mlp.0`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swin_jax import kernels as K
from swin_jax.configs import IntPair, Kernels
from swin_jax.layers import Dense, DropPath, LayerNorm, Mlp, remat_if
from swin_jax.swin import (SwinStage, SwinTransformer, attend_in_windows, merge_2x2_neighbours, relative_position_bias,
                           relative_position_index)

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # exp(logit_scale) is clamped at 100


def relative_coords_table(window_size: IntPair, pretrained_window_size: IntPair) -> np.ndarray:
    """((2wh-1) * (2ww-1), 2) log-spaced relative coordinates (dh, dw), row-major, as timm
    computes them in float32: each axis divided by the pre-training window - 1 (the window's
    own where none is set; at least 1), times 8, then sign(t) * log2(|t| + 1) / log2(8)."""
    (wh, ww), (ph, pw) = window_size, pretrained_window_size
    dh = np.arange(-(wh - 1), wh, dtype=np.float32)
    dw = np.arange(-(ww - 1), ww, dtype=np.float32)
    table = np.stack(np.meshgrid(dh, dw, indexing="ij"), axis=-1)  # (2wh-1, 2ww-1, 2)
    divisor = (ph, pw) if ph > 0 else (wh, ww)
    table = table / np.array([max(divisor[0] - 1, 1), max(divisor[1] - 1, 1)], np.float32)
    table = table * np.float32(8)
    table = np.sign(table) * np.log2(np.abs(table) + np.float32(1)) / np.float32(math.log2(8))
    return table.reshape(-1, 2).astype(np.float32)


def clamped_logit_scale(logit_scale: jax.Array) -> jax.Array:
    """exp(min(logit_scale, log 100)); the gradient passes where logit_scale <= log 100, as
    torch.clamp's does (jnp.minimum would halve it at the boundary)."""
    return jnp.exp(jnp.where(logit_scale <= LOGIT_SCALE_MAX, logit_scale, LOGIT_SCALE_MAX))


class WindowAttentionV2(nn.Module):
    """Scaled cosine attention inside windows, with the continuous position bias per head."""

    num_heads: int
    window_size: IntPair
    pretrained_window_size: IntPair = (0, 0)
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array, mask: Optional[np.ndarray], deterministic: bool) -> jax.Array:
        dim, heads = x.shape[-1], self.num_heads
        logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(10.0)), (heads, 1, 1), jnp.float32)
        # continuous position bias: Linear(2, 512) -> ReLU -> Linear(512, heads, no bias), in fp32
        coords = jnp.asarray(relative_coords_table(self.window_size, self.pretrained_window_size))
        hidden = nn.relu(Dense(512, name="cpb_mlp_0")(coords))
        table = Dense(heads, use_bias=False, name="cpb_mlp_2")(hidden)
        bias = 16.0 * jax.nn.sigmoid(relative_position_bias(table, relative_position_index(self.window_size)))[None]
        if mask is not None:
            bias = bias + mask[:, None]  # (windows, heads, N, N)

        qkv = Dense(3 * dim, use_bias=False, dtype=self.dtype, name="qkv")(x)
        if self.qkv_bias:  # q and v biases; the key's is zero (timm's non-saved k_bias buffer)
            q_bias = self.param("q_bias", nn.initializers.zeros, (dim,), jnp.float32)
            v_bias = self.param("v_bias", nn.initializers.zeros, (dim,), jnp.float32)
            qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
        qkv = K.materialize_cotangent(qkv, self.kernels)
        attn_dropout = nn.Dropout(self.attn_drop)
        dropout = (None if deterministic or self.attn_drop == 0.0
                   else functools.partial(attn_dropout, deterministic=False))
        scale = clamped_logit_scale(logit_scale).reshape(heads)
        attended = K.cosine_self_attention(qkv, heads, scale, bias, self.kernels, dropout)
        out = Dense(dim, dtype=self.dtype, name="proj")(attended)
        return nn.Dropout(self.proj_drop)(out, deterministic=deterministic)


class SwinV2Block(nn.Module):
    """Residual post-norm block: x + norm1(attn(x)), then x + norm2(mlp(x)); windows, shift and
    padding as in V1 (roll, pad bottom/right, attend, crop, roll back)."""

    num_heads: int
    window_size: IntPair
    shift_size: IntPair
    pretrained_window_size: IntPair = (0, 0)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    eps: float = 1e-5
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()
    remat_attention: bool = False  # recompute the attention in the backward pass (config.remat "attention")

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        c = x.shape[-1]
        x = K.materialize_cotangent(x, self.kernels)
        attn = remat_if(self.remat_attention, WindowAttentionV2, (3,))(self.num_heads, self.window_size, self.pretrained_window_size, self.qkv_bias,
                                 self.attn_drop, self.proj_drop, dtype=self.dtype, kernels=self.kernels, name="attn")
        y = attend_in_windows(x, self.window_size, self.shift_size, lambda t, mask: attn(t, mask, deterministic))
        # timm initialises the post-norms' scales to zero: each block starts as the identity
        post_norm = functools.partial(LayerNorm, self.eps, self.dtype, self.kernels, scale_init=nn.initializers.zeros)
        x = x + DropPath(self.drop_path)(post_norm(name="norm1")(y), deterministic)

        y = Mlp(int(c * self.mlp_ratio), self.proj_drop, self.dtype, self.kernels, name="mlp")(x, deterministic)
        return x + DropPath(self.drop_path)(post_norm(name="norm2")(y), deterministic)


class PatchMergingV2(nn.Module):
    """2x2 neighbours -> concat (row offset varies first) -> Linear(4C -> out) -> LayerNorm(out)."""

    out_dim: int
    eps: float = 1e-5
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Dense(self.out_dim, use_bias=False, dtype=self.dtype, name="reduction")(merge_2x2_neighbours(x))
        return LayerNorm(self.eps, self.dtype, self.kernels, name="norm")(x)


class SwinV2Stage(SwinStage):
    """V1's stage with V2's merging and blocks."""

    merging = PatchMergingV2

    def block(self, j: int, window: IntPair, shift: IntPair, drop_path: float) -> nn.Module:
        cfg, i = self.config, self.stage
        return remat_if(cfg.remat == "block", SwinV2Block, (2,))(
            cfg.num_heads[i], window, shift, cfg.pretrained_window_sizes[i], cfg.mlp_ratio, cfg.qkv_bias,
            cfg.proj_drop_rate, cfg.attn_drop_rate, drop_path, cfg.layer_norm_eps, self.dtype, cfg.kernels,
            cfg.remat == "attention", name=f"blocks_{j}")


class SwinTransformerV2(SwinTransformer):
    """Swin Transformer V2: V1's model (patch embedding, stages, final norm, head, the same
    entry points: `forward_features`, `forward_intermediates`, `forward_head`) with V2's stages.
    `config` is a `SwinV2Config`."""

    stage_module = SwinV2Stage
