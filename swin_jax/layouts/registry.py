"""The registry of checkpoint layouts: `LAYOUTS` (name -> `Layout`) from the libraries' tables, in
the order detection tries them, `get_layout`, and the detection of a checkpoint's layout and model
family from its keys (`detect_layout`, `layout_of_keys`, `detect_family`, `FAMILY_MARKERS`).

A new library's layout is a new table module (a `TABLE` of `Layout`s) and one line here.
"""
from __future__ import annotations

from typing import Optional, Sequence

from swin_jax.arguments import InputError
import swin_jax.layouts.dinov2 as dinov2
import swin_jax.layouts.google as google
import swin_jax.layouts.hugging_face as hugging_face
import swin_jax.layouts.official as official
import swin_jax.layouts.open_clip as open_clip
import swin_jax.layouts.timm as timm
import swin_jax.layouts.torchvision as torchvision
from swin_jax.layouts.engine import Layout

_LAYOUT_LIST = [
    # Detection takes the first layout whose signature matches, so the more specific come first.
    *official.TABLE,
    *dinov2.TABLE,  # before timm: the same names and more
    *timm.TABLE,
    *torchvision.TABLE,
    *open_clip.TABLE,
    *hugging_face.TABLE,  # DINOv2, CLIP, SigLIP, then Swin / Swinv2 / ViT (see its order there)
    *google.TABLE,
]
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in _LAYOUT_LIST}


def get_layout(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


# A canonical key that only checkpoints of one family hold, tried in this order.
FAMILY_MARKERS = (
    ("swinv2", "layers.0.blocks.0.attn.logit_scale"),
    ("swin", "layers.0.blocks.0.attn.relative_position_bias_table"),
    ("vit", "blocks.0.norm1.weight"),
)
FAMILY_NAMES = {"swin": "Swin Transformer V1", "swinv2": "Swin Transformer V2", "vit": "Vision Transformer"}


def detect_family(layout: str | Layout, keys: Sequence[str]) -> Optional[str]:
    """The model family whose marker key one of the checkpoint's keys is, read in `layout`
    (V2 files carry `logit_scale` / `cpb_mlp`, V1 files `relative_position_bias_table`); None
    when no family's marker is there."""
    layout = get_layout(layout)
    for family, marker in FAMILY_MARKERS:
        if family in layout.families() and any(
                m.canonical == marker for k in keys for m in layout.canonical(family, k)):
            return family
    return None


def layout_of_keys(keys: Sequence[str]) -> Optional[str]:
    """The name of the first layout whose signature one of the keys carries, None if none."""
    return next((name for name, layout in LAYOUTS.items() if layout.matches(keys)), None)


def detect_layout(keys: Sequence[str]) -> str:
    """The name of the first layout whose signature one of the checkpoint's keys carries."""
    found = layout_of_keys(keys)
    if found is not None:
        return found
    if not keys:
        raise InputError("the checkpoint holds no tensors")
    sample = ", ".join(sorted(keys)[:4]) + (", ..." if len(keys) > 4 else "")
    raise InputError(f"cannot tell the checkpoint's layout from its {len(keys)} keys ({sample}); name it (--layout; "
                     f"convert's --in-layout for its input; layout= in Python): one of {', '.join(LAYOUTS)}")
