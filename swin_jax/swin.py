"""Swin Transformer V1 in Flax linen, numerically identical to timm's `SwinTransformer`.

Module and parameter names follow timm's state_dict (`layers_1/blocks_0/attn/qkv` is
`layers.1.blocks.0.attn.qkv`), so conversion is a rename plus transposes. Window geometry
(window, shift, padding, mask) is static: it is computed with numpy at trace time and folded
into the compiled program as constants.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swin_jax.configs import IntPair, Kernels, SwinConfig
from swin_jax.kernels import materialize_cotangent
from swin_jax.layers import Dense, DropPath, LayerNorm, Mlp, attention, check_images, remat_if, trunc_normal

# ---------------------------------------------------------------------------------------------
# Window operations: plain functions on (B, H, W, C) arrays. They work on numpy and jax arrays.


def window_partition(x: Any, window_size: IntPair) -> Any:
    """(B, H, W, C) -> (B * num_windows, wh, ww, C); windows row-major, batch outermost."""
    b, h, w, c = x.shape
    wh, ww = window_size
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh, ww, c)


def window_reverse(windows: Any, window_size: IntPair, height: int, width: int) -> Any:
    """Inverse of `window_partition`: (B * num_windows, wh, ww, C) -> (B, height, width, C)."""
    wh, ww = window_size
    c = windows.shape[-1]
    x = windows.reshape(-1, height // wh, width // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def cyclic_shift(x: jax.Array, shift: IntPair, reverse: bool = False) -> jax.Array:
    """Roll the feature map up-left by `shift` (down-right with `reverse`), as torch.roll does."""
    sign = 1 if reverse else -1
    return jnp.roll(x, (sign * shift[0], sign * shift[1]), axis=(1, 2))


def attend_in_windows(x: jax.Array, window_size: IntPair, shift_size: IntPair,
                      attend: Callable[[jax.Array, Optional[np.ndarray]], jax.Array]) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C): `attend(windows, mask)` on (B * num_windows, wh * ww, C)
    token windows, as timm runs (shifted) window attention: roll up-left by the shift, zero-pad
    bottom/right to window multiples (after the roll; the padding is not masked), partition,
    attend with the -100 shift mask (None without a shift), undo all of it."""
    _, h, w, c = x.shape
    (wh, ww), shifted = window_size, any(shift_size)
    if shifted:
        x = cyclic_shift(x, shift_size)
    pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    mask = shifted_window_mask((hp, wp), window_size, shift_size) if shifted else None
    windows = attend(window_partition(x, window_size).reshape(-1, wh * ww, c), mask)
    x = window_reverse(windows.reshape(-1, wh, ww, c), window_size, hp, wp)[:, :h, :w]
    return cyclic_shift(x, shift_size, reverse=True) if shifted else x


def merge_2x2_neighbours(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C): each 2x2 neighbourhood concatenated in the
    order x00, x10, x01, x11 (the row offset varies first), odd sizes padded by a row/column."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = h + h % 2, w + w % 2
    # (B, H/2, dh, W/2, dw, C) -> (B, H/2, W/2, dw, dh, C)
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)


def relative_position_index(window_size: IntPair) -> np.ndarray:
    """(N, N) index into the (2wh-1)(2ww-1) bias table for tokens t = h * ww + w of a window."""
    wh, ww = window_size
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    return ((rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)).astype(np.int32)


def relative_position_bias(table: jax.Array, index: np.ndarray) -> jax.Array:
    """Look the (N, N) index up in the (entries, heads) table: returns (heads, N, N)."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)


def shifted_window_mask(padded_size: IntPair, window_size: IntPair, shift_size: IntPair) -> np.ndarray:
    """(num_windows, N, N) additive mask for shifted windows: -100 between tokens that came from
    different regions of the un-rolled map, 0 elsewhere.

    The nine regions are cut from the padded map by the slices timm uses, (0, -w), (-w, -s),
    (-s, None) per axis, so padded maps get exactly timm's (unmasked-padding) mask.
    """
    hp, wp = padded_size
    (wh, ww), (sh, sw) = window_size, shift_size
    labels = np.zeros((1, hp, wp, 1), np.float32)
    region = 0
    for h0, h1 in ((0, -wh), (-wh, -sh), (-sh, None)):
        for w0, w1 in ((0, -ww), (-ww, -sw), (-sw, None)):
            labels[:, h0:h1, w0:w1, :] = region
            region += 1
    windows = window_partition(labels, window_size).reshape(-1, wh * ww)
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Modules


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative position bias per head."""

    num_heads: int
    window_size: IntPair
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array, mask: Optional[np.ndarray], deterministic: bool) -> jax.Array:
        wh, ww = self.window_size
        table = self.param(
            "relative_position_bias_table", trunc_normal(0.02), ((2 * wh - 1) * (2 * ww - 1), self.num_heads)
        )
        bias = relative_position_bias(table, relative_position_index(self.window_size))[None]  # (1, heads, N, N)
        if mask is not None:
            bias = bias + mask[:, None]  # (windows, heads, N, N); -100 swamps the bias where it applies
        return attention(x, self.num_heads, bias, qkv_bias=self.qkv_bias, attn_drop=self.attn_drop,
                         proj_drop=self.proj_drop, dtype=self.dtype, deterministic=deterministic,
                         kernels=self.kernels)


class SwinBlock(nn.Module):
    """W-MSA (shift 0) or SW-MSA block: roll, pad bottom/right, attend in windows, undo."""

    num_heads: int
    window_size: IntPair
    shift_size: IntPair
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
        x = materialize_cotangent(x, self.kernels)
        attn = remat_if(self.remat_attention, WindowAttention, (3,))(self.num_heads, self.window_size, self.qkv_bias, self.attn_drop, self.proj_drop,
                               dtype=self.dtype, kernels=self.kernels, name="attn")
        y = LayerNorm(self.eps, self.dtype, self.kernels, name="norm1")(x)
        y = attend_in_windows(y, self.window_size, self.shift_size, lambda t, mask: attn(t, mask, deterministic))
        x = x + DropPath(self.drop_path)(y, deterministic)

        y = LayerNorm(self.eps, self.dtype, self.kernels, name="norm2")(x)
        y = Mlp(int(c * self.mlp_ratio), self.proj_drop, self.dtype, self.kernels, name="mlp")(y, deterministic)
        return x + DropPath(self.drop_path)(y, deterministic)


class PatchMerging(nn.Module):
    """2x2 neighbours -> concat (row offset varies first) -> LayerNorm(4C) -> Linear(4C -> out)."""

    out_dim: int
    eps: float = 1e-5
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = LayerNorm(self.eps, self.dtype, self.kernels, name="norm")(merge_2x2_neighbours(x))
        return Dense(self.out_dim, use_bias=False, dtype=self.dtype, name="reduction")(x)


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution, then LayerNorm; NHWC in and out."""

    embed_dim: int
    patch_size: int
    eps: float = 1e-5
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(
            self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
            param_dtype=jnp.float32, name="proj",
        )(x)
        return LayerNorm(self.eps, self.dtype, self.kernels, name="norm")(x)


class SwinStage(nn.Module):
    """Optional patch merging (timm puts it at the start of stages 1..n), then the blocks. Swin
    V2's stage changes the merging class and `block`."""

    config: SwinConfig
    stage: int
    dtype: Any = jnp.float32
    merging = PatchMerging  # class attributes, not fields

    def block(self, j: int, window: IntPair, shift: IntPair, drop_path: float) -> nn.Module:
        cfg, i = self.config, self.stage
        return remat_if(cfg.remat == "block", SwinBlock, (2,))(
            cfg.num_heads[i], window, shift, cfg.mlp_ratio, cfg.qkv_bias, cfg.proj_drop_rate, cfg.attn_drop_rate,
            drop_path, cfg.layer_norm_eps, self.dtype, cfg.kernels, cfg.remat == "attention", name=f"blocks_{j}")

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg, i = self.config, self.stage
        if i > 0:
            merging = remat_if(cfg.remat == "block", self.merging, ())
            x = merging(cfg.stage_dims[i], cfg.layer_norm_eps, self.dtype, cfg.kernels, name="downsample")(x)
        for j, rate in enumerate(cfg.drop_path_rates()[i]):
            x = self.block(j, *cfg.block_window_shift(i, j), rate)(x, deterministic)
        return x


class ClassifierHead(nn.Module):
    """Global average pool -> dropout -> Linear (`fc`); no Linear when num_classes is 0."""

    num_classes: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, pre_logits: bool = False) -> jax.Array:
        x = x.mean(axis=tuple(range(1, x.ndim - 1)))
        x = nn.Dropout(self.drop_rate)(x, deterministic=deterministic)
        if pre_logits or self.num_classes <= 0:
            return x
        return Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


class SwinTransformer(nn.Module):
    """Swin Transformer V1. Input: NHWC float images of `config.img_size`; output: logits.

    `train=True` turns on dropout and drop path and needs `rngs={'dropout': key}`.
    Other entry points (use with `method=`): `forward_features`, `forward_intermediates`.
    """

    config: SwinConfig
    dtype: Any = jnp.float32
    stage_module = SwinStage  # a class attribute, not a field: Swin V2 puts its own stages here

    def setup(self) -> None:
        cfg = self.config
        self.patch_embed = remat_if(cfg.remat == "block", PatchEmbed, ())(
            cfg.embed_dim, cfg.patch_size, cfg.layer_norm_eps, self.dtype, cfg.kernels)
        self.layers = [self.stage_module(cfg, i, self.dtype) for i in range(cfg.num_stages)]
        self.norm = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        self.head = ClassifierHead(cfg.num_classes, cfg.drop_rate, self.dtype)

    def forward_intermediates(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        """The output of every stage, NHWC, before the final norm (timm's intermediates)."""
        check_images(x, self.config)
        x = self.patch_embed(x.astype(self.dtype))
        outputs = []
        for stage in self.layers:
            x = stage(x, not train)
            outputs.append(x)
        return outputs

    def forward_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The final normalised feature map, NHWC."""
        return self.norm(self.forward_intermediates(x, train)[-1])

    def forward_head(self, features: jax.Array, train: bool = False, pre_logits: bool = False) -> jax.Array:
        """Pool the final feature map and classify (or return the pooled vector)."""
        return self.head(features, not train, pre_logits)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.forward_head(self.forward_features(x, train), train)

