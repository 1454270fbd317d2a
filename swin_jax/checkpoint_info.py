"""What a checkpoint file holds: layout, model family, the config its tensors imply, the
registered models it fits, its parameter count (`swin-jax inspect`)."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from swin_jax.checkpoint_io import read_checkpoint
from swin_jax.configs import MODEL_CONFIGS, SwinConfig, VitConfig
from swin_jax.layouts import LAYOUTS, TRANSFORMS, detect_layout, to_numpy


@dataclass
class CheckpointInfo:
    layout: str
    family: str
    config: dict[str, Any]  # the config fields the tensors imply
    guessed: list[str] = field(default_factory=list)  # fields the weights do not fix
    matches: list[str] = field(default_factory=list)  # registered models with this architecture
    num_params: int = 0
    num_tensors: int = 0

    def summary(self) -> str:
        lines = [f"layout      {self.layout} ({LAYOUTS[self.layout].description})",
                 f"family      {self.family}",
                 f"parameters  {self.num_params:,} in {self.num_tensors} tensors"]
        for key, value in self.config.items():
            note = "  (guessed: not stored in the weights)" if key in self.guessed else ""
            lines.append(f"{key:<12}{value}{note}")
        lines.append(f"matches     {', '.join(self.matches) if self.matches else 'no registered model (a custom config)'}")
        return "\n".join(lines)


def canonical_tensors(state_dict: Mapping[str, Any], layout: str, family: str) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under timm's keys and in timm's shapes (split tensors joined)."""
    lay = LAYOUTS[layout]
    parts: dict[str, dict[int, Any]] = {}
    transforms: dict[str, str] = {}
    for key, value in state_dict.items():
        if lay.is_ignored(key):
            continue
        canonical, part, transform = lay.canonical(family, key)
        parts.setdefault(canonical, {})[part] = value
        transforms[canonical] = transform
    out = {}
    for canonical, pieces in parts.items():
        ordered = [to_numpy(pieces[i]) for i in sorted(pieces)]
        out[canonical] = TRANSFORMS[transforms[canonical]][1](ordered, None)
    return out


def _family(layout: str, keys: list[str]) -> str:
    lay = LAYOUTS[layout]
    for family, marker in (("swin", "layers.0.blocks.0.norm1.weight"), ("vit", "blocks.0.norm1.weight")):
        if family in lay.families() and any(lay.canonical(family, k)[0] == marker for k in keys):
            return family
    raise ValueError(f"the checkpoint's keys fit neither a Swin nor a ViT in the {layout} layout")


def _swin_config(t: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    embed, in_chans, patch, _ = t["patch_embed.proj.weight"].shape
    blocks = [re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k) for k in t]
    depth_of: dict[int, int] = {}
    for m in filter(None, blocks):
        depth_of[int(m[1])] = max(depth_of.get(int(m[1]), 0), int(m[2]) + 1)
    stages = range(len(depth_of))
    heads = tuple(int(t[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]) for i in stages)
    side = math.isqrt(t["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0])
    window = (side + 1) // 2
    head = t.get("head.fc.weight")
    config = dict(embed_dim=int(embed), depths=tuple(depth_of[i] for i in stages), num_heads=heads,
                  window_size=(window, window), patch_size=int(patch), in_chans=int(in_chans),
                  mlp_ratio=t["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed,
                  num_classes=0 if head is None else int(head.shape[0]),
                  img_size=(32 * window, 32 * window))  # timm's names: window 7 at 224, 12 at 384
    return config, ["img_size"]


def _vit_config(t: dict[str, np.ndarray], heads_hint: Optional[int]) -> tuple[dict[str, Any], list[str]]:
    embed, in_chans, patch, _ = t["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m[1]) for m in filter(None, (re.match(r"blocks\.(\d+)\.", k) for k in t)))
    class_token = "cls_token" in t
    grid = t["pos_embed"].shape[1] - int(class_token)
    side = math.isqrt(grid)
    head = t.get("head.weight")
    config = dict(embed_dim=int(embed), depth=depth, num_heads=heads_hint, patch_size=int(patch),
                  in_chans=int(in_chans), mlp_ratio=t["blocks.0.mlp.fc1.weight"].shape[0] / embed,
                  class_token=class_token, global_pool="avg" if "fc_norm.weight" in t or not class_token else "token",
                  num_classes=0 if head is None else int(head.shape[0]),
                  img_size=(side * patch, side * patch))
    guessed = [] if side * side == grid else ["img_size"]
    if heads_hint is None:  # the fused qkv does not store the head count: take a registered model's
        same = [MODEL_CONFIGS[n][1] for n in MODEL_CONFIGS if MODEL_CONFIGS[n][0] is VitConfig
                and MODEL_CONFIGS[n][1]["embed_dim"] == embed and MODEL_CONFIGS[n][1]["depth"] == depth]
        config["num_heads"] = same[0]["num_heads"] if same else max(1, int(embed) // 64)
        guessed.append("num_heads")
    return config, guessed


ARCHITECTURE = {"swin": ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "in_chans", "mlp_ratio"),
                "vit": ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "mlp_ratio", "class_token")}


def _matches(family: str, config: dict[str, Any]) -> list[str]:
    config_cls = SwinConfig if family == "swin" else VitConfig
    out = []
    for name, (cls, args) in MODEL_CONFIGS.items():
        if cls is not config_cls:
            continue
        registered = dataclasses.asdict(cls(**args))
        mine = dataclasses.asdict(cls(**{k: v for k, v in config.items() if k in registered}))
        if all(registered[k] == mine[k] for k in ARCHITECTURE[family]):
            out.append(name)
    return sorted(out, key=lambda n: (MODEL_CONFIGS[n][1].get("img_size") != config.get("img_size", (0, 0))[0], n))


def describe(state_dict: Mapping[str, Any], layout: Optional[str] = None) -> CheckpointInfo:
    """Infer layout, family and config from a flat checkpoint dict."""
    keys = list(state_dict)
    layout = layout or detect_layout(keys)
    family = _family(layout, keys)
    tensors = canonical_tensors(state_dict, layout, family)
    if family == "swin":
        config, guessed = _swin_config(tensors)
    else:
        query = next((v for k, v in state_dict.items() if k.endswith("query/kernel")), None)  # Google: (D, heads, hd)
        config, guessed = _vit_config(tensors, None if query is None else int(np.shape(query)[1]))
    kept = [v for k, v in state_dict.items() if not LAYOUTS[layout].is_ignored(k)]
    info = CheckpointInfo(layout, family, config, guessed, num_tensors=len(kept),
                          num_params=sum(int(np.prod(np.shape(v))) for v in kept))
    info.matches = _matches(family, config)
    return info


def describe_file(path: str | Path, layout: Optional[str] = None) -> CheckpointInfo:
    """`describe` for a checkpoint file (.pth/.pt/.bin/.safetensors/.npz) or a `.msgpack` params file."""
    return describe(*read_checkpoint(path, layout))
