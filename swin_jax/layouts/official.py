"""Microsoft's official Swin Transformer / Swin V2 checkpoints: timm's names with a few renames
(the patch merging at the end of a stage, `head`), and the buffers they save.
"""
from __future__ import annotations

from swin_jax.layouts.engine import Layout, Rule
from swin_jax.layouts.timm import SWIN_BUFFERS

R = Rule

_OFFICIAL_SWIN = (R("layers.{i}.downsample.{rest}", "layers.{i-1}.downsample.{rest}"), R("head.fc.{rest}", "head.{rest}"))
_BLOCK = "layers.{i}.blocks.{j}."

TABLE: tuple[Layout, ...] = (
    Layout(
        "official", "Microsoft's official Swin / Swin V2 .pth (downsample at the end of stages, `head`, saved buffers)",
        r"^layers\.0\.downsample\.reduction\.weight$",
        {"swin": _OFFICIAL_SWIN, "swinv2": _OFFICIAL_SWIN},
        ignored=SWIN_BUFFERS, passthrough=True,
        buffers={"swin": ((_BLOCK + "attn.relative_position_index", "relative_position_index"),
                          (_BLOCK + "attn_mask", "attn_mask")),
                 "swinv2": ((_BLOCK + "attn.relative_coords_table", "relative_coords_table"),
                            (_BLOCK + "attn.relative_position_index", "relative_position_index"),
                            (_BLOCK + "attn_mask", "attn_mask"))},
    ),
)
