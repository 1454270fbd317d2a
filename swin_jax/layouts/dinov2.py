"""facebookresearch/dinov2's own backbone checkpoints: timm's names but `register_tokens`, a
`mask_token`, and a class-token row in `pos_embed` (`FOLDS['class_pos_row']`).
"""
from __future__ import annotations

from swin_jax.layouts.engine import Layout, Rule

R = Rule

_DINOV2 = Layout(
    "dinov2", "facebookresearch/dinov2 backbones (timm's names but `register_tokens`, `mask_token`, and a "
              "class-token row in `pos_embed`)",
    r"^(mask_token|register_tokens)$", {"vit": (
        R("reg_token", "register_tokens"),
        # the rest under timm's names: what DINOv2's ViT holds (no pre-norm, qk-norm or pooling head)
        *(R(key, key) for key in ("cls_token", "pos_embed", "patch_embed.proj.{rest}", "norm.{rest}", *(
            "blocks.{i}." + part for part in ("norm1.{rest}", "attn.qkv.{rest}", "attn.proj.{rest}", "ls1.gamma",
                                              "norm2.{rest}", "mlp.fc1.{rest}", "mlp.fc2.{rest}", "ls2.gamma")))),
        R("head.{rest}", (), why="DINOv2's backbones have no classifier; use num_classes=0"),
    )}, zeros={"mask_token": (1, "embed_dim")}, folds=("class_pos_row",))

TABLE: tuple[Layout, ...] = (
    _DINOV2,
)
