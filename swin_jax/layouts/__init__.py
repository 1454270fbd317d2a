"""Checkpoint layouts as data: key templates and tensor transforms, per model family.

Every layout is written against the canonical key set, which is timm's state_dict; its rules
pair canonical key templates with the layout's (see `engine`, which reads them and knows no
table). The tables are one module per library:

- `timm`: timm's own state_dict (the canonical names), and the buffers Swin files save;
- `official`: Microsoft's official Swin / Swin V2 files;
- `dinov2`: facebookresearch/dinov2's backbones;
- `torchvision`: torchvision's Swin, Swin V2 and ViT;
- `open_clip`: OpenCLIP / OpenAI CLIP image towers;
- `hugging_face`: transformers' Swin, Swinv2, ViT, DINOv2, CLIP and SigLIP (v5 and v4 names);
- `google`: Google's JAX ViT .npz files (big_vision, vit_jax).

`registry` assembles them into `LAYOUTS`, in the order detection tries them, and detects a
checkpoint's layout and model family from its keys. The converter engine in `swin_jax.convert`
reads these tables; nothing here knows about Flax.
"""
from __future__ import annotations

from swin_jax.layouts.engine import (FOLDS, TRANSFORMS, WHOLE, Fold, KeyMatch, Layout, Plan, Rule, Transform,
                                     bind_template, join_parts, part_span, take_part, to_numpy)
from swin_jax.layouts.registry import (FAMILY_MARKERS, FAMILY_NAMES, LAYOUTS, detect_family, detect_layout, get_layout,
                                       layout_of_keys)
from swin_jax.layouts.timm import SWIN_BUFFERS

__all__ = [
    "FAMILY_MARKERS", "FAMILY_NAMES", "FOLDS", "LAYOUTS", "SWIN_BUFFERS", "TRANSFORMS", "WHOLE", "Fold", "KeyMatch",
    "Layout", "Plan", "Rule", "Transform", "bind_template", "detect_family", "detect_layout", "get_layout",
    "join_parts", "layout_of_keys", "part_span", "take_part", "to_numpy",
]
