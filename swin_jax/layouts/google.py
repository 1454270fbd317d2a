"""Google's JAX ViT checkpoints (.npz): big_vision's and vit_jax's names.
"""
from __future__ import annotations

import re

from swin_jax.layouts.engine import Layout, Rule

R = Rule


def _google_vit(name: str, description: str, prefix: str, pos: str, attn: str, norm2: str, mlp: str) -> Layout:
    """Google's JAX ViT names: vit_jax (`Transformer/posembed_input`, MHA_1, LayerNorm_2,
    MlpBlock_3) and big_vision (`pos_embedding`, MHA_0, LayerNorm_1, MlpBlock_0, under params/)."""
    block = prefix + "Transformer/encoderblock_{i}/"
    mha = block + attn + "/"
    return Layout(name, description, "^" + re.escape(prefix + "Transformer/encoderblock_0/"), {"vit": (
        R("cls_token", prefix + "cls"),
        R("pos_embed", prefix + pos),
        R("patch_embed.proj.weight", prefix + "embedding/kernel", "conv_hwio"),
        R("patch_embed.proj.bias", prefix + "embedding/bias"),
        R("blocks.{i}.norm1.weight", block + "LayerNorm_0/scale"),
        R("blocks.{i}.norm1.bias", block + "LayerNorm_0/bias"),
        R("blocks.{i}.attn.qkv.weight", tuple(mha + f"{n}/kernel" for n in ("query", "key", "value")),
          "qkv_heads_kernel"),
        R("blocks.{i}.attn.qkv.bias", tuple(mha + f"{n}/bias" for n in ("query", "key", "value")), "qkv_heads_bias"),
        R("blocks.{i}.attn.proj.weight", mha + "out/kernel", "out_heads_kernel"),
        R("blocks.{i}.attn.proj.bias", mha + "out/bias"),
        R("blocks.{i}.norm2.weight", block + f"{norm2}/scale"),
        R("blocks.{i}.norm2.bias", block + f"{norm2}/bias"),
        R("blocks.{i}.mlp.fc1.weight", block + f"{mlp}/Dense_0/kernel", "transpose"),
        R("blocks.{i}.mlp.fc1.bias", block + f"{mlp}/Dense_0/bias"),
        R("blocks.{i}.mlp.fc2.weight", block + f"{mlp}/Dense_1/kernel", "transpose"),
        R("blocks.{i}.mlp.fc2.bias", block + f"{mlp}/Dense_1/bias"),
        R("norm.weight", prefix + "Transformer/encoder_norm/scale"),
        R("norm.bias", prefix + "Transformer/encoder_norm/bias"),
        R("fc_norm.{rest}", (), why="Google's ViT normalises the tokens before pooling; build the model with "
                                    "fc_norm=False to use this layout"),
        R("head.weight", prefix + "head/kernel", "transpose"),
        R("head.bias", prefix + "head/bias"),
    )})

TABLE: tuple[Layout, ...] = (
    _google_vit("big_vision", "big_vision .npz, unscanned blocks (ViT only)", "params/", "pos_embedding",
                "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
    _google_vit("vit_jax", "Google's vit_jax .npz (ViT only)", "", "Transformer/posembed_input/pos_embedding",
                "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
)
