"""OpenCLIP's (and OpenAI CLIP's) checkpoints: the image tower under `visual.*`; the text tower is
ignored.
"""
from __future__ import annotations

from swin_jax.layouts.engine import Layout, Rule

R = Rule

_OPENCLIP_BLOCK = "visual.transformer.resblocks.{i}."
_OPENCLIP = Layout(
    "openclip", "OpenCLIP / OpenAI CLIP image tower (`visual.*`; the text tower is ignored)",
    r"^visual\.(class_embedding|conv1\.weight)$", {"vit": (
        R("cls_token", "visual.class_embedding", "flat_token"),
        R("pos_embed", "visual.positional_embedding", "no_batch_axis"),
        R("patch_embed.proj.weight", "visual.conv1.weight"),
        R("patch_embed.proj.bias", (), why="CLIP's patch convolution has no bias; create the model with pre_norm=True"),
        R("norm_pre.{rest}", "visual.ln_pre.{rest}"),
        R("blocks.{i}.norm1.{rest}", _OPENCLIP_BLOCK + "ln_1.{rest}"),
        R("blocks.{i}.attn.qkv.weight", _OPENCLIP_BLOCK + "attn.in_proj_weight"),
        R("blocks.{i}.attn.qkv.bias", _OPENCLIP_BLOCK + "attn.in_proj_bias"),
        R("blocks.{i}.attn.proj.{rest}", _OPENCLIP_BLOCK + "attn.out_proj.{rest}"),
        R("blocks.{i}.norm2.{rest}", _OPENCLIP_BLOCK + "ln_2.{rest}"),
        R("blocks.{i}.mlp.fc1.{rest}", _OPENCLIP_BLOCK + "mlp.c_fc.{rest}"),
        R("blocks.{i}.mlp.fc2.{rest}", _OPENCLIP_BLOCK + "mlp.c_proj.{rest}"),
        R("norm.{rest}", "visual.ln_post.{rest}"),
        R("head.weight", "visual.proj", "transpose"),  # (D, out)
        R("head.bias", (), fixed=0.0, why="OpenCLIP's projection visual.proj has no bias"),
    )}, ignored=(r"^(?!visual\.)",))  # the text tower, logit_scale, ...

TABLE: tuple[Layout, ...] = (
    _OPENCLIP,
)
