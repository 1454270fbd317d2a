"""timm's own layout: its state_dict is the canonical key set, so its table has no rules (keys keep
their names). Also the saved buffers of Swin files (`SWIN_BUFFERS`), timm's buffer names, which
the other libraries' Swin files carry too.
"""
from __future__ import annotations

from swin_jax.layouts.engine import Layout

# saved buffers of Swin files: V1's and V2's index and mask, V2's log-spaced coordinates
SWIN_BUFFERS = (r"(^|\.)relative_position_index$", r"(^|\.)attn_mask$", r"(^|\.)relative_coords_table$")

TABLE: tuple[Layout, ...] = (
    Layout("timm", "timm's state_dict (also Hugging Face hub copies of timm weights)",
           r"^(layers\.\d+\.blocks|blocks)\.0\.norm1\.weight$", {"swin": (), "swinv2": (), "vit": ()},
           ignored=SWIN_BUFFERS, passthrough=True),
)
