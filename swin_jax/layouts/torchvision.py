"""torchvision's Swin (swin_t/s/b), Swin V2 (swin_v2_t/s/b) and ViT (vit_b_16, ...) state_dicts.
"""
from __future__ import annotations

from swin_jax.layouts.engine import Layout, Rule
from swin_jax.layouts.timm import SWIN_BUFFERS

R = Rule

_TORCHVISION_SWIN = (
    R("patch_embed.proj.{rest}", "features.0.0.{rest}"),
    R("patch_embed.norm.{rest}", "features.0.2.{rest}"),
    R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", "features.{2*i+1}.{j}.mlp.0.{rest}"),
    R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", "features.{2*i+1}.{j}.mlp.3.{rest}"),
    R("layers.{i}.blocks.{j}.{rest}", "features.{2*i+1}.{j}.{rest}"),
    R("layers.{i}.downsample.{rest}", "features.{2*i}.{rest}"),
    R("head.fc.{rest}", "head.{rest}"),
    R("norm.{rest}", "norm.{rest}"),
)
_BLOCK = "layers.{i}.blocks.{j}."

TABLE: tuple[Layout, ...] = (
    Layout(
        "torchvision", "torchvision's swin_t/s/b, swin_v2_t/s/b and vit_b_16/b_32/l_16/l_32/h_14",
        r"^(features\.0\.0\.weight|encoder\.layers\.encoder_layer_0\.ln_1\.weight)$",
        {
            "swin": _TORCHVISION_SWIN,
            # one fused qkv.bias: thirds q_bias, key (zero: torchvision zeroes it in every forward pass), v_bias
            "swinv2": (
                R(_BLOCK + "attn.q_bias", "features.{2*i+1}.{j}.attn.qkv.bias", part=(0, 3)),
                R(_BLOCK + "attn.v_bias", "features.{2*i+1}.{j}.attn.qkv.bias", part=(2, 3)),
                *_TORCHVISION_SWIN,
            ),
            "vit": (
                R("cls_token", "class_token"),
                R("pos_embed", "encoder.pos_embedding"),
                R("patch_embed.proj.{rest}", "conv_proj.{rest}"),
                R("blocks.{i}.norm1.{rest}", "encoder.layers.encoder_layer_{i}.ln_1.{rest}"),
                R("blocks.{i}.norm2.{rest}", "encoder.layers.encoder_layer_{i}.ln_2.{rest}"),
                R("blocks.{i}.attn.qkv.weight", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight"),
                R("blocks.{i}.attn.qkv.bias", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias"),
                R("blocks.{i}.attn.proj.{rest}", "encoder.layers.encoder_layer_{i}.self_attention.out_proj.{rest}"),
                R("blocks.{i}.mlp.fc1.{rest}", "encoder.layers.encoder_layer_{i}.mlp.0.{rest}"),
                R("blocks.{i}.mlp.fc2.{rest}", "encoder.layers.encoder_layer_{i}.mlp.3.{rest}"),
                R("norm.{rest}", "encoder.ln.{rest}"),
                R("fc_norm.{rest}", (), why="torchvision's ViT pools the class token; use global_pool='token'"),
                R("head.{rest}", "heads.head.{rest}"),
            ),
        },
        ignored=SWIN_BUFFERS,
        buffers={"swin": ((_BLOCK + "attn.relative_position_index", "relative_position_index_flat"),),
                 "swinv2": ((_BLOCK + "attn.relative_coords_table", "relative_coords_table"),
                            (_BLOCK + "attn.relative_position_index", "relative_position_index_flat"))},
    ),
)
