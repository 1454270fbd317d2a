"""Vision Transformer in Flax linen, numerically identical to timm's `VisionTransformer`.

Parameter names follow timm's state_dict (`blocks_3/attn/qkv` is `blocks.3.attn.qkv`,
`cls_token`, `pos_embed`, `head`). timm concatenates the class token, then adds `pos_embed`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from swin_jax.configs import Kernels, VitConfig
from swin_jax.kernels import materialize_cotangent
from swin_jax.layers import Dense, DropPath, LayerNorm, Mlp, attention, check_images, remat_if, trunc_normal


class Attention(nn.Module):
    """Global multi-head self-attention over all tokens."""

    num_heads: int
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        return attention(x, self.num_heads, None, qkv_bias=self.qkv_bias, attn_drop=self.attn_drop,
                         proj_drop=self.proj_drop, dtype=self.dtype, deterministic=deterministic,
                         kernels=self.kernels)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    config: VitConfig
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        x = materialize_cotangent(x, cfg.kernels)
        y = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels, name="norm1")(x)
        y = remat_if(cfg.remat == "attention", Attention, (2,))(cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate, self.dtype, cfg.kernels,
                      name="attn")(y, deterministic)
        x = x + DropPath(self.drop_path)(y, deterministic)
        y = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels, name="norm2")(x)
        y = Mlp(int(x.shape[-1] * cfg.mlp_ratio), cfg.proj_drop_rate, self.dtype, cfg.kernels, name="mlp")(
            y, deterministic)
        return x + DropPath(self.drop_path)(y, deterministic)


class PatchEmbed(nn.Module):
    """Non-overlapping patch convolution, flattened row-major to (B, N, D)."""

    embed_dim: int
    patch_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    param_dtype=jnp.float32, name="proj")(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(nn.Module):
    """ViT. Input: NHWC float images of `config.img_size`; output: logits.

    `train=True` turns on dropout and drop path and needs `rngs={'dropout': key}`.
    Other entry points (use with `method=`): `forward_features` (the normalised token
    sequence, (B, N(+1), D)), `forward_intermediates` (every block's output tokens).
    """

    config: VitConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        self.patch_embed = PatchEmbed(cfg.embed_dim, cfg.patch_size, self.dtype)
        if cfg.class_token:
            self.cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, cfg.embed_dim))
        self.pos_embed = self.param("pos_embed", trunc_normal(0.02), (1, cfg.num_tokens, cfg.embed_dim))
        block = remat_if(cfg.remat == "block", Block, (2,))
        self.blocks = [block(cfg, rate, self.dtype) for rate in cfg.drop_path_rates()]
        # timm: the final norm sits on the tokens, or after the pooling (fc_norm) for 'avg'
        if cfg.use_fc_norm:
            self.fc_norm = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        else:
            self.norm = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        if cfg.num_classes > 0:
            self.head = Dense(cfg.num_classes, dtype=self.dtype)

    def embed(self, x: jax.Array) -> jax.Array:
        """Patches -> tokens: concatenate the class token, then add the position embedding."""
        check_images(x, self.config)
        x = self.patch_embed(x.astype(self.dtype))
        if self.config.class_token:
            cls = jnp.broadcast_to(self.cls_token.astype(self.dtype), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        return x + self.pos_embed.astype(self.dtype)

    def forward_intermediates(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        """The output tokens of every block, (B, N(+1), D), before the final norm."""
        x = self.embed(x)
        outputs = []
        for block in self.blocks:
            x = block(x, not train)
            outputs.append(x)
        return outputs

    def forward_features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The token sequence after the last block and the final norm (un-normalised with fc_norm)."""
        x = self.forward_intermediates(x, train)[-1]
        return x if self.config.use_fc_norm else self.norm(x)

    def forward_head(self, features: jax.Array, train: bool = False, pre_logits: bool = False) -> jax.Array:
        """Pool the tokens ('token' or 'avg' of the patch tokens), fc_norm, dropout, classify."""
        cfg = self.config
        if cfg.global_pool == "token":
            x = features[:, 0]
        else:
            x = features[:, cfg.num_prefix_tokens:].mean(axis=1)
        if cfg.use_fc_norm:
            x = self.fc_norm(x)
        x = self.head_drop(x, deterministic=not train)
        return x if pre_logits or cfg.num_classes <= 0 else self.head(x)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.forward_head(self.forward_features(x, train), train)
