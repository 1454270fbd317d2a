"""Weight conversion between swin_jax params and checkpoint layouts (timm, Google .npz, ...).

One engine reads every layout. Our Flax module names mirror timm's, so each parameter has a
canonical timm key derived mechanically from its Flax path (`layers_1/blocks_0/attn/qkv/kernel`
-> `layers.1.blocks.0.attn.qkv.weight`) and a canonical tensor (timm's layout: Dense kernels
transposed, Conv kernels HWIO -> OIHW). A `Layout` is a table of `Rule`s on top of that: a
regex on the canonical key, the layout's key (or keys, when a tensor is split), and the name
of a tensor transform. Keys no rule matches keep their canonical name and tensor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swin_jax.models import param_shapes
from swin_jax.resample import resample_pos_embed

# (Flax leaf name, ndim) -> axis permutation taking the Flax tensor to the PyTorch tensor.
TORCH_FROM_FLAX_AXES: dict[tuple[str, int], tuple[int, ...]] = {
    ("kernel", 2): (1, 0),  # Dense (in, out) -> Linear (out, in)
    ("kernel", 4): (3, 2, 0, 1),  # Conv HWIO -> OIHW
}
# Flax leaf name -> PyTorch leaf name
TORCH_LEAF_NAMES = {"kernel": "weight", "scale": "weight"}


def _split3(t: Any) -> list:
    third = t.shape[0] // 3
    return [t[i * third:(i + 1) * third] for i in range(3)]


def _stack(ts: Sequence[Any]) -> Any:
    return np.concatenate([np.asarray(t) for t in ts], axis=0)


# name -> (canonical tensor -> layout tensors, layout tensors -> canonical tensor). Written with
# array methods and slicing so that they also run on jax.ShapeDtypeStruct under jax.eval_shape.
TRANSFORMS: dict[str, tuple[Callable[[Any, Any], list], Callable[[Sequence[Any], Any], Any]]] = {
    "same": (lambda t, cfg: [t], lambda ts, cfg: ts[0]),
    # Linear (out, in) <-> Dense kernel (in, out)
    "transpose": (lambda t, cfg: [t.T], lambda ts, cfg: np.asarray(ts[0]).T),
    # Conv OIHW <-> HWIO
    "conv_hwio": (lambda t, cfg: [t.transpose(2, 3, 1, 0)], lambda ts, cfg: np.asarray(ts[0]).transpose(3, 2, 0, 1)),
    # fused qkv Linear (3D, D) <-> query/key/value kernels (D, heads, head_dim)
    "qkv_heads_kernel": (
        lambda t, cfg: [w.T.reshape(w.shape[1], cfg.num_heads, -1) for w in _split3(t)],
        lambda ts, cfg: _stack([np.asarray(k).reshape(k.shape[0], -1).T for k in ts]),
    ),
    # fused qkv bias (3D,) <-> query/key/value biases (heads, head_dim)
    "qkv_heads_bias": (
        lambda t, cfg: [b.reshape(cfg.num_heads, -1) for b in _split3(t)],
        lambda ts, cfg: _stack([np.asarray(b).reshape(-1) for b in ts]),
    ),
    # attention output Linear (D, D) <-> out kernel (heads, head_dim, D)
    "out_heads_kernel": (
        lambda t, cfg: [t.T.reshape(cfg.num_heads, -1, t.shape[0])],
        lambda ts, cfg: np.asarray(ts[0]).reshape(-1, ts[0].shape[-1]).T,
    ),
}


@dataclass(frozen=True)
class Rule:
    """Canonical keys matching `pattern` are stored under `keys` (regex templates) after
    `transform`; several keys split one tensor. No keys: the layout cannot hold the tensor,
    and `why` says so."""

    pattern: str
    keys: tuple[str, ...]
    transform: str = "same"
    why: str = ""


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout, as data read by the converter engine."""

    name: str
    description: str
    signature: str  # regex that some key of every checkpoint in this layout matches
    rules: tuple[Rule, ...] = ()
    ignored: tuple[str, ...] = ()  # regexes of non-parameter keys files may hold (saved buffers)

    def plan(self, canonical: str) -> tuple[tuple[str, ...], str]:
        """The layout keys and tensor transform of one canonical key."""
        for rule in self.rules:
            match = re.fullmatch(rule.pattern, canonical)
            if match:
                if not rule.keys:
                    raise ValueError(f"the {self.name} layout cannot hold {canonical}: {rule.why}")
                return tuple(match.expand(k) for k in rule.keys), rule.transform
        return (canonical,), "same"

    def is_ignored(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.ignored)


def _google_vit(name: str, description: str, prefix: str, pos: str, attn: str, norm2: str, mlp: str) -> Layout:
    """Google's JAX ViT names: vit_jax (`Transformer/posembed_input`, MHA_1, LayerNorm_2,
    MlpBlock_3) and big_vision (`pos_embedding`, MHA_0, LayerNorm_1, MlpBlock_0, under params/)."""
    block = prefix + r"Transformer/encoderblock_\1/"
    mha = block + attn + "/"
    r = Rule
    return Layout(name, description, "^" + re.escape(prefix + "Transformer/encoderblock_0/"), rules=(
        r(r"cls_token", (prefix + "cls",)),
        r(r"pos_embed", (prefix + pos,)),
        r(r"patch_embed\.proj\.weight", (prefix + "embedding/kernel",), "conv_hwio"),
        r(r"patch_embed\.proj\.bias", (prefix + "embedding/bias",)),
        r(r"blocks\.(\d+)\.norm1\.weight", (block + "LayerNorm_0/scale",)),
        r(r"blocks\.(\d+)\.norm1\.bias", (block + "LayerNorm_0/bias",)),
        r(r"blocks\.(\d+)\.attn\.qkv\.weight", tuple(mha + f"{n}/kernel" for n in ("query", "key", "value")),
          "qkv_heads_kernel"),
        r(r"blocks\.(\d+)\.attn\.qkv\.bias", tuple(mha + f"{n}/bias" for n in ("query", "key", "value")),
          "qkv_heads_bias"),
        r(r"blocks\.(\d+)\.attn\.proj\.weight", (mha + "out/kernel",), "out_heads_kernel"),
        r(r"blocks\.(\d+)\.attn\.proj\.bias", (mha + "out/bias",)),
        r(r"blocks\.(\d+)\.norm2\.weight", (block + f"{norm2}/scale",)),
        r(r"blocks\.(\d+)\.norm2\.bias", (block + f"{norm2}/bias",)),
        r(r"blocks\.(\d+)\.mlp\.fc1\.weight", (block + f"{mlp}/Dense_0/kernel",), "transpose"),
        r(r"blocks\.(\d+)\.mlp\.fc1\.bias", (block + f"{mlp}/Dense_0/bias",)),
        r(r"blocks\.(\d+)\.mlp\.fc2\.weight", (block + f"{mlp}/Dense_1/kernel",), "transpose"),
        r(r"blocks\.(\d+)\.mlp\.fc2\.bias", (block + f"{mlp}/Dense_1/bias",)),
        r(r"norm\.weight", (prefix + "Transformer/encoder_norm/scale",)),
        r(r"norm\.bias", (prefix + "Transformer/encoder_norm/bias",)),
        r(r"fc_norm\..*", (), why="Google's ViT normalises the tokens before pooling; build the model with "
                                   "fc_norm=False to use this layout"),
        r(r"head\.weight", (prefix + "head/kernel",), "transpose"),
        r(r"head\.bias", (prefix + "head/bias",)),
    ))


LAYOUTS: dict[str, Layout] = {
    "timm": Layout(
        "timm",
        "timm's state_dict (also Hugging Face hub copies of timm weights)",
        signature=r"^(layers\.\d+\.blocks|blocks)\.0\.norm1\.weight$",
        ignored=(r"(^|\.)relative_position_index$", r"(^|\.)attn_mask$"),
    ),
}
for _layout in (
    _google_vit("vit_jax", "Google's vit_jax .npz (ViT only)", "", "Transformer/posembed_input/pos_embedding",
                "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
    _google_vit("big_vision", "big_vision .npz, unscanned blocks (ViT only)", "params/", "pos_embedding",
                "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
):
    LAYOUTS[_layout.name] = _layout


# Canonical keys whose tensors can be resized when a checkpoint's grid differs from the model's.
def _resize_pos_embed(tensor: np.ndarray, shape: tuple[int, ...], config: Any) -> np.ndarray:
    return resample_pos_embed(tensor, config.patch_grid, config.num_prefix_tokens)


RESIZERS: dict[str, Callable[[np.ndarray, tuple[int, ...], Any], np.ndarray]] = {r"pos_embed": _resize_pos_embed}


class CheckpointMismatchError(ValueError):
    """A state_dict does not fit the model: lists every missing, unexpected and mis-shaped key."""

    def __init__(self, what: str, missing: list[tuple[str, tuple]], unexpected: list[tuple[str, tuple]],
                 misshaped: list[tuple[str, tuple, tuple]]):
        self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
        lines = [f"{what}: {len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped key(s)"]
        lines += [f"  missing     {key} {shape}" for key, shape in missing]
        lines += [f"  unexpected  {key} {shape}" for key, shape in unexpected]
        lines += [f"  mis-shaped  {key}: checkpoint {got}, model expects {want}" for key, got, want in misshaped]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class _Spec:
    """Where one Flax parameter lives in a layout."""

    canonical: str
    flax_path: tuple[str, ...]
    axes: tuple[int, ...]  # Flax -> canonical (torch) permutation
    flax_shape: tuple[int, ...]
    keys: tuple[str, ...]  # layout keys
    transform: str
    shapes: tuple[tuple[int, ...], ...]  # layout shapes

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        return tuple(self.flax_shape[a] for a in self.axes)


def canonical_key(flax_path: tuple[str, ...]) -> str:
    """timm-style key of a Flax param path: `blocks_3` -> `blocks.3`, `kernel`/`scale` -> `weight`."""
    *modules, leaf = flax_path
    parts = [re.sub(r"^(.*)_(\d+)$", r"\1.\2", m) for m in modules]
    return ".".join(parts + [TORCH_LEAF_NAMES.get(leaf, leaf)])


def get_layout(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


def detect_layout(keys: Sequence[str]) -> str:
    """The name of the layout whose signature the checkpoint's keys carry."""
    found = [name for name, layout in LAYOUTS.items() if any(re.search(layout.signature, k) for k in keys)]
    if len(found) != 1:
        sample = ", ".join(list(keys)[:5])
        raise ValueError(f"cannot tell the checkpoint's layout (keys start {sample}); "
                         f"pass one of {', '.join(LAYOUTS)}" if not found else
                         f"checkpoint matches several layouts ({', '.join(found)}); pass one")
    return found[0]


def _specs(model: nn.Module, layout: Layout) -> list[_Spec]:
    specs = []
    for path, leaf in traverse_util.flatten_dict(param_shapes(model)).items():
        axes = TORCH_FROM_FLAX_AXES.get((path[-1], len(leaf.shape)), tuple(range(len(leaf.shape))))
        canonical = canonical_key(path)
        keys, transform = layout.plan(canonical)
        to_layout = TRANSFORMS[transform][0]
        shape = jax.ShapeDtypeStruct(tuple(leaf.shape[a] for a in axes), jnp.float32)
        shapes = tuple(tuple(s.shape) for s in jax.eval_shape(lambda t: to_layout(t, model.config), shape))
        specs.append(_Spec(canonical, path, axes, tuple(leaf.shape), keys, transform, shapes))
    return specs


def _to_numpy(value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        import torch  # only reached when torch tensors were passed in

        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bf16
    return np.asarray(value)


def _resized(spec: _Spec, parts: list[np.ndarray], config: Any) -> np.ndarray | None:
    """The checkpoint tensor resized to the model's grid, or None where that does not apply."""
    resize = next((fn for pattern, fn in RESIZERS.items() if re.fullmatch(pattern, spec.canonical)), None)
    if resize is None or spec.transform != "same":
        return None
    try:
        tensor = resize(parts[0], spec.canonical_shape, config)
    except ValueError:
        return None
    return tensor if tuple(tensor.shape) == spec.canonical_shape else None


def from_torch(model: nn.Module, state_dict: Mapping[str, Any], layout: str | Layout = "timm",
               resize: bool = True) -> dict:
    """Convert a checkpoint's tensors (torch tensors or numpy arrays, keyed as in `layout`) into
    `model`'s params pytree.

    Saved buffers (`relative_position_index`, `attn_mask`) are ignored. With `resize`, a ViT
    position embedding for another patch grid is resampled as timm does (bicubic, antialiased).
    Any missing, unexpected or mis-shaped key raises one `CheckpointMismatchError` listing all.
    """
    layout = get_layout(layout)
    specs = _specs(model, layout)
    tensors = {k: _to_numpy(v) for k, v in state_dict.items() if not layout.is_ignored(k)}
    claimed = {k for s in specs for k in s.keys}
    missing = [(k, shape) for s in specs for k, shape in zip(s.keys, s.shapes) if k not in tensors]
    unexpected = [(k, tuple(v.shape)) for k, v in tensors.items() if k not in claimed]
    misshaped, flat = [], {}
    for s in specs:
        if any(k not in tensors for k in s.keys):
            continue
        parts = [tensors[k] for k in s.keys]
        got = tuple(tuple(p.shape) for p in parts)
        if got == s.shapes:
            canonical = TRANSFORMS[s.transform][1](parts, model.config)
        else:
            canonical = _resized(s, parts, model.config) if resize else None
            if canonical is None:
                misshaped += [(k, g, want) for k, g, want in zip(s.keys, got, s.shapes) if g != want]
                continue
        flat[s.flax_path] = jnp.asarray(np.transpose(canonical, np.argsort(s.axes)).astype(np.float32))
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"checkpoint does not match the {type(model).__name__} model ({layout.name} layout)",
            missing, unexpected, misshaped)
    return traverse_util.unflatten_dict(flat)


def to_torch(model: nn.Module, params: Mapping[str, Any], layout: str | Layout = "timm") -> dict[str, np.ndarray]:
    """Convert `model`'s params pytree (or any pytree shaped like it, e.g. gradients) into a dict
    of numpy arrays keyed as in `layout`; for PyTorch layouts, `torch.from_numpy` each to load it."""
    layout = get_layout(layout)
    specs = _specs(model, layout)
    by_path = {s.flax_path: s for s in specs}
    flat = traverse_util.flatten_dict(dict(params))
    missing = [("/".join(p), s.flax_shape) for p, s in by_path.items() if p not in flat]
    unexpected = [("/".join(p), tuple(np.shape(v))) for p, v in flat.items() if p not in by_path]
    misshaped = [
        ("/".join(p), tuple(np.shape(flat[p])), s.flax_shape)
        for p, s in by_path.items() if p in flat and tuple(np.shape(flat[p])) != s.flax_shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"params do not match the {type(model).__name__} model", missing, unexpected, misshaped
        )
    out = {}
    for s in specs:
        canonical = np.transpose(np.asarray(flat[s.flax_path]), s.axes)
        for key, tensor in zip(s.keys, TRANSFORMS[s.transform][0](canonical, model.config)):
            # np.array copies: writable, C-ordered arrays that torch.from_numpy takes without warnings
            out[key] = np.array(tensor, order="C")
    return out


def infer_num_classes(state_dict: Mapping[str, Any], config_cls: type, layout: str | Layout = "timm") -> int:
    """Class count of a checkpoint from its classifier weight; 0 when it has no classifier."""
    layout = get_layout(layout)
    keys, transform = layout.plan(config_cls.head_key)
    head = state_dict.get(keys[0])
    if head is None:
        return 0
    return int(head.shape[-1] if transform == "transpose" else head.shape[0])
