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

from swin_jax.checkpoint_io import EMA_WEIGHT_SETS, read_checkpoint
from swin_jax.configs import CONFIG_TYPES, MODEL_CONFIGS, VitConfig
from swin_jax.layouts import (FAMILY_NAMES, FOLDS, LAYOUTS, TRANSFORMS, detect_family, detect_layout, take_part,
                              to_numpy)
from swin_jax.arguments import InputError


@dataclass
class CheckpointInfo:
    layout: str
    family: str
    config: dict[str, Any]  # the config fields the tensors imply
    kind: str = ""  # the model family the options point to ("DINOv2 with 4 registers"); "" for a plain one
    guessed: list[str] = field(default_factory=list)  # fields the weights do not fix
    matches: list[str] = field(default_factory=list)  # registered models with this architecture
    num_params: int = 0
    num_tensors: int = 0
    unrecorded: dict[str, str] = field(default_factory=dict)  # fields the file does not record: why
    weight_set: str = ""  # the container key read (a training checkpoint's `state_dict`, ...); "" for a flat file
    weight_sets: tuple[str, ...] = ()  # every weight set the file holds
    prefix: str = ""  # the wrapper prefix stripped from every key
    dtypes: dict[str, int] = field(default_factory=dict)  # tensors per dtype, buffers included

    def summary(self) -> str:
        lines = []
        if self.weight_set:
            others = [s for s in self.weight_sets if s != self.weight_set.split(".")[0]]
            also = f"; the file also holds {', '.join(others)}" if others else ""
            hint = " (--use-ema reads it)" if any(s in EMA_WEIGHT_SETS for s in others) else ""
            lines.append(f"weights     {self.weight_set}{also}{hint}")
        if self.prefix:
            lines.append(f"prefix      {self.prefix!r} stripped from every key")
        lines += [f"layout      {self.layout} ({LAYOUTS[self.layout].description})",
                 f"family      {self.family} ({FAMILY_NAMES[self.family]})"]
        lines += [f"kind        {self.kind}"] if self.kind else []
        lines += [f"parameters  {self.num_params:,} in {self.num_tensors} tensors"]
        lines += [f"dtypes      {', '.join(f'{d} ({n})' for d, n in self.dtypes.items())}"] if self.dtypes else []
        for key, value in self.config.items():
            note = "  (guessed: not stored in the weights)" if key in self.guessed else ""
            lines.append(f"{key:<11} {value}{note}")
        lines += [f"{key:<11} not recorded: {why}" for key, why in self.unrecorded.items()]
        lines.append(f"matches     {', '.join(self.matches) if self.matches else 'no registered model (a custom config)'}")
        return "\n".join(lines)


def canonical_tensors(state_dict: Mapping[str, Any], layout: str, family: str,
                      buffers: bool = False) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under timm's keys and in timm's shapes (split tensors joined, a
    shared tensor's slices taken apart, the layout's folds applied where the file implies them:
    DINOv2's class row of `pos_embed` in a file with registers). With `buffers`: its saved
    buffers instead, under the keys timm gives them."""
    lay = LAYOUTS[layout]
    parts: dict[str, dict[int, Any]] = {}
    transforms: dict[str, str] = {}
    for key, value in state_dict.items():
        if lay.is_ignored(key) != buffers:
            continue
        for match in lay.canonical(family, key):
            parts.setdefault(match.canonical, {})[match.index] = take_part(to_numpy(value), match.part)
            transforms[match.canonical] = match.transform
    out = {}
    for canonical, pieces in parts.items():
        ordered = [pieces[i] for i in sorted(pieces)]
        out[canonical] = TRANSFORMS[transforms[canonical]][1](ordered, None)
    for name in () if buffers else lay.folds:
        fold = FOLDS[name]
        if fold.implied_by in out and all(k in out for k in fold.keys):
            out.update(fold.from_layout({k: out[k] for k in fold.keys}, None))
    return out


def _family(layout: str, keys: list[str]) -> str:
    family = detect_family(layout, keys)
    if family is None:
        raise InputError(f"the checkpoint's keys fit neither a Swin, a Swin V2 nor a ViT in the {layout} layout")
    return family


def _classifier(t: dict[str, np.ndarray], key: str) -> int:
    """The class count of a (classes, features) classifier weight; 0 without one."""
    if key not in t:
        return 0
    if np.ndim(t[key]) != 2:
        raise InputError(f"the checkpoint's classifier {key} has shape {tuple(np.shape(t[key]))}, not (classes, features)")
    return int(np.shape(t[key])[0])


def _swin_common(t: dict[str, np.ndarray], heads_key: str, heads_axis: int) -> dict[str, Any]:
    """What V1 and V2 weights fix alike: widths, depths, heads (axis `heads_axis` of each stage's
    `heads_key`), patch, channels, MLP ratio, classes."""
    embed, in_chans, patch, _ = t["patch_embed.proj.weight"].shape
    blocks = [re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k) for k in t]
    depth_of: dict[int, int] = {}
    for m in filter(None, blocks):
        depth_of[int(m[1])] = max(depth_of.get(int(m[1]), 0), int(m[2]) + 1)
    stages = range(len(depth_of))
    head = _classifier(t, "head.fc.weight")
    return dict(embed_dim=int(embed), depths=tuple(depth_of[i] for i in stages),
                num_heads=tuple(int(t[heads_key.format(i=i)].shape[heads_axis]) for i in stages),
                patch_size=int(patch), in_chans=int(in_chans),
                mlp_ratio=t["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed,
                num_classes=head)


def _swin_config(t: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    config = _swin_common(t, "layers.{i}.blocks.0.attn.relative_position_bias_table", 1)  # (entries, heads)
    side = math.isqrt(t["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0])
    window = (side + 1) // 2
    config = dict(config, window_size=(window, window),
                  img_size=(32 * window, 32 * window))  # timm's names: window 7 at 224, 12 at 384
    return config, ["img_size"]


NOT_IN_V2_WEIGHTS = "Swin V2's position bias is continuous, so its weights load at any {}"


def _pretrained_window(table: np.ndarray) -> tuple[int, int]:
    """The pre-training window a saved (1, 2wh-1, 2ww-1, 2) coordinates table was scaled by
    (0 where by the block's own window), inverting sign(t) log2(8 |d| / (p - 1) + 1) / 3 at the
    farthest offset d = w - 1."""
    out = []
    for axis in range(2):
        window = (table.shape[1 + axis] + 1) // 2
        farthest = float(np.abs(table[0, ..., axis]).max())
        if window == 1 or farthest == 0:
            out.append(0)
            continue
        divisor = round(8 * (window - 1) / (2 ** (3 * farthest) - 1))
        out.append(0 if divisor == window - 1 else divisor + 1)
    return out[0], out[1]


def _swinv2_config(t: dict[str, np.ndarray], buffers: dict[str, np.ndarray]
                   ) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """V2's config: heads from `logit_scale`; window and pre-training windows from the saved
    coordinate tables (official and torchvision files), image size from the saved masks."""
    config = _swin_common(t, "layers.{i}.blocks.0.attn.logit_scale", 0)  # (heads, 1, 1)
    unrecorded: dict[str, str] = {}
    guessed: list[str] = []
    tables = {k: v for k, v in buffers.items() if k.endswith("attn.relative_coords_table") and v.ndim == 4}
    if not tables:
        unrecorded["window_size"] = NOT_IN_V2_WEIGHTS.format("window") + " (this file saves no coordinate tables)"
    else:  # stages whose map is smaller than the window shrink it: the largest is the model's
        windows = [((v.shape[1] + 1) // 2, (v.shape[2] + 1) // 2) for v in tables.values()]
        config["window_size"] = (max(w[0] for w in windows), max(w[1] for w in windows))
        firsts = [tables.get(f"layers.{i}.blocks.0.attn.relative_coords_table") for i in range(len(config["depths"]))]
        pretrained = tuple(_pretrained_window(v) if v is not None else (0, 0) for v in firsts)
        if any(any(p) for p in pretrained):
            config["pretrained_window_sizes"] = tuple(p[0] if p[0] == p[1] else p for p in pretrained)
    masks = {int(m[1]): buffers[m[0]] for m in map(re.compile(r"layers\.(\d+)\.blocks\.\d+\.attn_mask").fullmatch,
                                                    buffers) if m}
    size = None
    if masks:  # the first shifted stage's (windows, N, N) mask covers its map: a square map assumed
        stage = min(masks)
        table = tables.get(f"layers.{stage}.blocks.0.attn.relative_coords_table")
        if table is not None:
            wh, ww = (table.shape[1] + 1) // 2, (table.shape[2] + 1) // 2
            area = masks[stage].shape[0] * wh * ww
            side = math.isqrt(area)
            if side * side == area and side % wh == 0 and side % ww == 0:
                size = side * config["patch_size"] * 2 ** stage
    if size is not None:
        config["img_size"] = (size, size)
        guessed.append("img_size")
    else:
        unrecorded["img_size"] = NOT_IN_V2_WEIGHTS.format("image size")
    return config, guessed, unrecorded


def _pos_embed_grid(rows: int, prefix: int, registers: bool) -> tuple[bool, int]:
    """(no_embed_class, grid entries) from a position embedding's length: it covers the prefix
    tokens and the patches, or the patches only (timm's no_embed_class). Where both lengths are
    square grids, register models are taken to cover the patches only, as timm's do."""
    square = lambda n: n > 0 and math.isqrt(n) ** 2 == n
    with_prefix, patches_only = square(rows - prefix), prefix > 0 and square(rows)
    if patches_only and (registers or not with_prefix):
        return True, rows
    return False, rows - prefix


def _vit_config(t: dict[str, np.ndarray], heads_hint: Optional[int]) -> tuple[dict[str, Any], list[str]]:
    embed, in_chans, patch, _ = t["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m[1]) for m in filter(None, (re.match(r"blocks\.(\d+)\.", k) for k in t)))
    class_token, dist_token = "cls_token" in t, "dist_token" in t
    reg_tokens = int(t["reg_token"].shape[1]) if "reg_token" in t else 0
    no_embed_class, grid = _pos_embed_grid(t["pos_embed"].shape[1], class_token + dist_token + reg_tokens,
                                           reg_tokens > 0)
    side = math.isqrt(max(grid, 0))
    head = _classifier(t, "head.weight")
    q_norm = t.get("blocks.0.attn.q_norm.weight")  # (head_dim,): the head count follows
    if heads_hint is None and q_norm is not None and q_norm.shape[0] and embed % q_norm.shape[0] == 0:
        heads_hint = int(embed) // int(q_norm.shape[0])
    pool = "map" if "attn_pool.latent" in t else "avg" if "fc_norm.weight" in t or not class_token else "token"
    config = dict(embed_dim=int(embed), depth=depth, num_heads=heads_hint, patch_size=int(patch),
                  in_chans=int(in_chans), mlp_ratio=t["blocks.0.mlp.fc1.weight"].shape[0] / embed,
                  class_token=class_token, global_pool=pool,
                  num_classes=head,
                  img_size=(side * patch, side * patch))
    # the options of today's checkpoints that the tensors show (defaults are left out)
    options = dict(reg_tokens=reg_tokens, dist_token=dist_token, no_embed_class=no_embed_class,
                   pre_norm="norm_pre.weight" in t, qk_norm=q_norm is not None)
    config.update({k: v for k, v in options.items() if v})
    guessed = [] if side * side == grid else ["img_size"]
    if "blocks.0.ls1.gamma" in t:  # LayerScale: its initial value is not in the weights (describe fills it)
        config["init_values"] = 1e-5
        guessed.append("init_values")
    if heads_hint is None:  # the fused qkv does not store the head count: take a registered model's
        same = [MODEL_CONFIGS[n][1] for n in MODEL_CONFIGS if MODEL_CONFIGS[n][0] is VitConfig
                and MODEL_CONFIGS[n][1]["embed_dim"] == embed and MODEL_CONFIGS[n][1]["depth"] == depth]
        config["num_heads"] = same[0]["num_heads"] if same else max(1, int(embed) // 64)
        guessed.append("num_heads")
    return config, guessed


DINOV2_LAYOUTS = ("dinov2", "hf_dinov2", "hf_v4_dinov2")


def _vit_kind(config: dict[str, Any], layout: str) -> tuple[str, dict[str, str]]:
    """The family a ViT checkpoint's options point to, and what its weights do not record."""
    layer_scale, regs = "init_values" in config, config.get("reg_tokens", 0)
    if regs:
        return (f"DINOv2 with {regs} registers" if layer_scale else f"ViT with {regs} registers"), {}
    if config.get("dist_token"):
        return "DeiT distilled", {}
    if config["global_pool"] == "map":
        return "SigLIP image tower", {"act_layer": "the MLP activation is not in the weights: big_vision's and "
                                                   "transformers' SigLIP use gelu_tanh, timm's configs gelu"}
    if config.get("pre_norm"):
        return "CLIP image tower", {"act_layer": "the MLP activation is not in the weights: OpenAI's CLIP weights "
                                                 "use quick_gelu, most others gelu"}
    if layer_scale:  # DeiT III adds the position embedding to the patches only, DINOv2 to every token
        return ("DeiT III" if config.get("no_embed_class") and layout not in DINOV2_LAYOUTS else "DINOv2"), {}
    return "", {}


_SWIN_ARCHITECTURE = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "in_chans", "mlp_ratio")
ARCHITECTURE = {"swin": _SWIN_ARCHITECTURE, "swinv2": _SWIN_ARCHITECTURE,
                "vit": ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "mlp_ratio", "class_token",
                        "reg_tokens", "dist_token", "no_embed_class", "pre_norm", "qk_norm", "init_values",
                        "global_pool")}


def _compared(family: str, key: str, value: Any, config: dict[str, Any]) -> Any:
    """What of a config field the weights fix: for a ViT, the MLP's width (not the ratio timm
    rounds it from), whether there is LayerScale (not its initial value) and whether the head
    pools by attention (the other poolings are a choice at creation)."""
    if family != "vit":
        return value
    if key == "mlp_ratio":
        return round(config["embed_dim"] * value)
    if key == "init_values":
        return value is not None
    if key == "global_pool":
        return value == "map"
    return value


def _matches(family: str, config: dict[str, Any]) -> list[str]:
    """Registered models of the family with the checkpoint's architecture; fields the file does
    not record (a V2 file's window) are left out of the comparison."""
    config_cls = CONFIG_TYPES[family]
    # a ViT's options are left out of `config` at their defaults, and compared at them
    compared = [k for k in ARCHITECTURE[family] if k in config or family == "vit"]
    out = []
    for name, (cls, args) in MODEL_CONFIGS.items():
        if cls is not config_cls:
            continue
        registered = dataclasses.asdict(cls(**args))
        try:
            mine = dataclasses.asdict(cls(**{k: v for k, v in config.items() if k in registered}))
        except ValueError:  # options no model combines (a distillation token with registers): no match
            return []
        if all(_compared(family, k, registered[k], registered) == _compared(family, k, mine[k], mine)
               for k in compared):
            out.append(name)

    registered = list(MODEL_CONFIGS)

    def order(name: str) -> tuple:  # the recorded image size first, then the recorded pre-training windows
        args = MODEL_CONFIGS[name][1]
        # then, for a ViT, the name registered first: vit_base_patch16_224 before deit_base_patch16_224,
        # the same architecture, whose image preparation differs
        then = registered.index(name) if family == "vit" else name
        return (args.get("img_size") != config.get("img_size", (0, 0))[0],
                tuple(args.get("pretrained_window_sizes", ())) != config.get("pretrained_window_sizes", ()), then)

    return sorted(out, key=order)


def describe(state_dict: Mapping[str, Any], layout: Optional[str] = None) -> CheckpointInfo:
    """Infer layout, family and config from a flat checkpoint dict."""
    keys = list(state_dict)
    layout = layout or detect_layout(keys)
    family = _family(layout, keys)
    tensors = canonical_tensors(state_dict, layout, family)
    try:
        config, guessed, kind, unrecorded = _config_of(family, tensors, state_dict, layout)
    except InputError:
        raise
    except (KeyError, IndexError, ValueError) as err:  # a tensor a whole model has is missing or misshapen
        what = f"no {err.args[0]}" if isinstance(err, KeyError) else f"a tensor of an unexpected shape ({err})"
        raise InputError(f"the checkpoint's {family} tensors ({layout} layout) are not a whole model: it has "
                         f"{what}") from None
    kept = [v for k, v in state_dict.items() if not LAYOUTS[layout].is_ignored(k)]
    info = CheckpointInfo(layout, family, config, kind, guessed, num_tensors=len(kept),
                          num_params=sum(int(np.prod(np.shape(v))) for v in kept), unrecorded=unrecorded)
    info.matches = _matches(family, config)
    for value in state_dict.values():
        dtype = str(getattr(value, "dtype", "?")).removeprefix("torch.")
        info.dtypes[dtype] = info.dtypes.get(dtype, 0) + 1
    if "init_values" in config and info.matches:  # LayerScale's initial value: the registered model's
        config["init_values"] = MODEL_CONFIGS[info.matches[0]][1].get("init_values", config["init_values"])
    return info


def _config_of(family: str, tensors: dict[str, np.ndarray], state_dict: Mapping[str, Any], layout: str
               ) -> tuple[dict[str, Any], list[str], str, dict[str, str]]:
    """(config, guessed fields, kind, unrecorded fields) that a family's canonical tensors imply."""
    unrecorded: dict[str, str] = {}
    if family == "swin":
        config, guessed = _swin_config(tensors)
    elif family == "swinv2":
        config, guessed, unrecorded = _swinv2_config(tensors, canonical_tensors(state_dict, layout, family, buffers=True))
    else:
        query = next((v for k, v in state_dict.items() if k.endswith("query/kernel")), None)  # Google: (D, heads, hd)
        config, guessed = _vit_config(tensors, None if query is None else int(np.shape(query)[1]))
    kind, more = _vit_kind(config, layout) if family == "vit" else ("", {})
    return config, guessed, kind, {**unrecorded, **more}


def describe_file(path: str | Path, layout: Optional[str] = None, use_ema: bool = False) -> CheckpointInfo:
    """`describe` for a checkpoint file (.pth/.pth.tar/.pt/.bin/.ckpt/.safetensors/.npz) or a `.msgpack`
    params file, with the weight sets it holds, the one read and any wrapper prefix stripped."""
    read = read_checkpoint(path, layout, use_ema)
    info = describe(read.state_dict, read.layout)
    info.weight_set, info.weight_sets, info.prefix = read.weight_set, read.weight_sets, read.prefix
    return info
