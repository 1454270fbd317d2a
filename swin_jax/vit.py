"""Vision Transformer in Flax linen, numerically identical to timm's `VisionTransformer` (and
`VisionTransformerDistilled` for DeiT's distillation token).

Parameter names follow timm's state_dict (`blocks_3/attn/qkv` is `blocks.3.attn.qkv`,
`cls_token`, `reg_token`, `pos_embed`, `blocks_0/ls1/gamma`, `attn_pool/latent`, `head`). The
prefix tokens are the class token, DeiT's distillation token, then the register tokens. timm
joins them to the patches and then adds `pos_embed`, or with `no_embed_class` adds `pos_embed`
to the patches first (it then has no entries for the prefix tokens).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from swin_jax.configs import Kernels, VitConfig
from swin_jax.kernels import materialize_cotangent
from swin_jax.layers import Dense, DropPath, LayerNorm, Mlp, attention, check_images, remat_if, trunc_normal
from swin_jax.reference import at_least_float32
from swin_jax.resample import antialias_bicubic_weights


class Attention(nn.Module):
    """Global multi-head self-attention over all tokens (q and k layer-normalised with `qk_norm`)."""

    num_heads: int
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()
    qk_norm_eps: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        return attention(x, self.num_heads, None, qkv_bias=self.qkv_bias, attn_drop=self.attn_drop,
                         proj_drop=self.proj_drop, dtype=self.dtype, deterministic=deterministic,
                         kernels=self.kernels, qk_norm_eps=self.qk_norm_eps)


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (`gamma`, initialised to `init_values`)."""

    init_values: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.constant(self.init_values), (x.shape[-1],), jnp.float32)
        return x * gamma.astype(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); the
    LayerScales only with a non-zero `init_values` (timm tests it for truth)."""

    config: VitConfig
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        x = materialize_cotangent(x, cfg.kernels)
        y = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels, name="norm1")(x)
        y = remat_if(cfg.remat == "attention", Attention, (2,))(
            cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate, self.dtype, cfg.kernels,
            cfg.layer_norm_eps if cfg.qk_norm else None, name="attn")(y, deterministic)
        if cfg.init_values:
            y = LayerScale(cfg.init_values, name="ls1")(y)
        x = x + DropPath(self.drop_path)(y, deterministic)
        y = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels, name="norm2")(x)
        y = Mlp(int(x.shape[-1] * cfg.mlp_ratio), cfg.proj_drop_rate, self.dtype, cfg.kernels, cfg.act_layer,
                name="mlp")(y, deterministic)
        if cfg.init_values:
            y = LayerScale(cfg.init_values, name="ls2")(y)
        return x + DropPath(self.drop_path)(y, deterministic)


class PatchEmbed(nn.Module):
    """Non-overlapping patch convolution: (B, H, W, C) -> the (B, H/p, W/p, D) patch grid."""

    embed_dim: int
    patch_size: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        return nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", use_bias=self.use_bias,
                       dtype=self.dtype, param_dtype=jnp.float32, name="proj")(x)


class AttentionPoolLatent(nn.Module):
    """timm's attention pooling ('map' head, SigLIP): a learned latent query attends over the
    tokens (`q` on the latent, `kv` on the tokens, then `proj`), then x + mlp(norm(x)); returns
    the pooled (B, D) vector."""

    num_heads: int
    mlp_ratio: float
    eps: float
    act_layer: str = "gelu"
    dtype: Any = jnp.float32
    kernels: Kernels = Kernels()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, _, dim = x.shape
        head_dim = dim // self.num_heads
        latent = self.param("latent", trunc_normal(dim ** -0.5), (1, 1, dim), jnp.float32)
        q = Dense(dim, dtype=self.dtype, name="q")(jnp.broadcast_to(latent.astype(self.dtype), (batch, 1, dim)))
        k, v = jnp.split(Dense(2 * dim, dtype=self.dtype, name="kv")(x), 2, axis=-1)
        q, k, v = (t.reshape(batch, -1, self.num_heads, head_dim) for t in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * head_dim ** -0.5, k)
        probs = jax.nn.softmax(at_least_float32(scores), axis=-1).astype(v.dtype)
        x = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, 1, dim)
        x = Dense(dim, dtype=self.dtype, name="proj")(x)
        y = LayerNorm(self.eps, self.dtype, self.kernels, name="norm")(x)
        x = x + Mlp(int(dim * self.mlp_ratio), 0.0, self.dtype, self.kernels, self.act_layer, name="mlp")(y, True)
        return x[:, 0]


def resample_grid_embedding(grid_embed: jax.Array, new_grid: tuple[int, int]) -> jax.Array:
    """A (1, h, w, D) position-embedding grid resized to `new_grid` inside a traced function, as
    timm's `resample_abs_pos_embed` does it (PyTorch's antialiased bicubic): the weights depend
    only on the static sizes, so they are numpy constants and the resize is two matmuls."""
    _, h, w, _ = grid_embed.shape
    if (h, w) == tuple(new_grid):
        return grid_embed
    wh = jnp.asarray(antialias_bicubic_weights(h, new_grid[0]), jnp.float32)
    ww = jnp.asarray(antialias_bicubic_weights(w, new_grid[1]), jnp.float32)
    out = jnp.einsum("ih,bhwc->biwc", wh, grid_embed.astype(jnp.float32), precision="highest")
    return jnp.einsum("jw,biwc->bijc", ww, out, precision="highest").astype(grid_embed.dtype)


class VisionTransformer(nn.Module):
    """ViT. Input: NHWC float images of `config.img_size` (any size the patch divides with
    `dynamic_img_size`); output: logits.

    `train=True` turns on dropout and drop path and needs `rngs={'dropout': key}`.
    Other entry points (use with `method=`): `forward_features` (the normalised token
    sequence, (B, prefix + N, D)), `forward_intermediates` (every block's output tokens).
    """

    config: VitConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(d, cfg.patch_size, not cfg.pre_norm, self.dtype)  # CLIP: no bias
        if cfg.class_token:
            self.cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
        if cfg.dist_token:
            self.dist_token = self.param("dist_token", trunc_normal(0.02), (1, 1, d))
        if cfg.reg_tokens:
            self.reg_token = self.param("reg_token", nn.initializers.normal(1e-6), (1, cfg.reg_tokens, d))
        self.pos_embed = self.param("pos_embed", trunc_normal(0.02), (1, cfg.pos_embed_len, d))
        if cfg.pre_norm:
            self.norm_pre = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        block = remat_if(cfg.remat == "block", Block, (2,))
        self.blocks = [block(cfg, rate, self.dtype) for rate in cfg.drop_path_rates()]
        # timm: the final norm sits on the tokens, or after the pooling (fc_norm) for 'avg'
        if cfg.use_fc_norm:
            self.fc_norm = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        else:
            self.norm = LayerNorm(cfg.layer_norm_eps, self.dtype, cfg.kernels)
        if cfg.global_pool == "map":
            self.attn_pool = AttentionPoolLatent(cfg.num_heads, cfg.mlp_ratio, cfg.layer_norm_eps, cfg.act_layer,
                                                 self.dtype, cfg.kernels)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        if cfg.num_classes > 0:
            self.head = Dense(cfg.num_classes, dtype=self.dtype)
            if cfg.dist_token:
                self.head_dist = Dense(cfg.num_classes, dtype=self.dtype)

    def _position_embedding(self, grid: tuple[int, int]) -> jax.Array:
        """`pos_embed` for a patch grid: as stored, or resampled to another grid (dynamic_img_size)."""
        cfg = self.config
        if tuple(grid) == cfg.patch_grid:
            return self.pos_embed
        prefix = cfg.pos_embed_prefix_tokens
        stored = self.pos_embed[:, prefix:].reshape(1, *cfg.patch_grid, cfg.embed_dim)
        resized = resample_grid_embedding(stored, grid).reshape(1, -1, cfg.embed_dim)
        return jnp.concatenate([self.pos_embed[:, :prefix], resized], axis=1)

    def embed(self, x: jax.Array) -> jax.Array:
        """Patches -> tokens: the prefix tokens (class, distillation, registers) and the position
        embedding, in timm's order for the config; then `norm_pre` (CLIP)."""
        cfg = self.config
        check_images(x, cfg)
        grid = self.patch_embed(x.astype(self.dtype))
        batch, h, w, d = grid.shape
        x = grid.reshape(batch, h * w, d)
        pos_embed = self._position_embedding((h, w)).astype(self.dtype)
        prefix = [getattr(self, name) for name, on in
                  (("cls_token", cfg.class_token), ("dist_token", cfg.dist_token), ("reg_token", cfg.reg_tokens)) if on]
        prefix = [jnp.broadcast_to(t.astype(self.dtype), (batch, *t.shape[1:])) for t in prefix]
        if cfg.no_embed_class:  # DeiT III, DINOv2 with registers: the prefix tokens have no position
            x = jnp.concatenate([*prefix, x + pos_embed], axis=1)
        else:
            x = jnp.concatenate([*prefix, x], axis=1) + pos_embed
        return self.norm_pre(x) if cfg.pre_norm else x

    def forward_intermediates(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        """The output tokens of every block, (B, prefix + N, D), before the final norm."""
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
        """Pool the tokens ('token': the class token; 'avg': the mean of the patch tokens; 'map':
        attention pooling of the patch tokens), fc_norm, dropout, classify. With the distillation
        token, the class and distillation tokens' heads are averaged (their features with
        `pre_logits`), as timm does outside distillation training."""
        cfg = self.config
        if cfg.dist_token:
            pooled = [self.head_drop(features[:, i], deterministic=not train) for i in (0, 1)]
            if pre_logits or cfg.num_classes <= 0:
                return (pooled[0] + pooled[1]) / 2
            return (self.head(pooled[0]) + self.head_dist(pooled[1])) / 2
        if cfg.global_pool == "token":
            x = features[:, 0]
        elif cfg.global_pool == "map":
            x = self.attn_pool(features[:, cfg.num_prefix_tokens:])
        else:
            x = features[:, cfg.num_prefix_tokens:].mean(axis=1)
        if cfg.use_fc_norm:
            x = self.fc_norm(x)
        x = self.head_drop(x, deterministic=not train)
        return x if pre_logits or cfg.num_classes <= 0 else self.head(x)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.forward_head(self.forward_features(x, train), train)
