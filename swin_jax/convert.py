"""Weight conversion between swin_jax params and PyTorch state_dicts.

One engine reads every layout. Our Flax module names mirror timm's, so each parameter has a
canonical timm key derived mechanically from its Flax path (`layers_1/blocks_0/attn/qkv/kernel`
-> `layers.1.blocks.0.attn.qkv.weight`) and a tensor transform chosen by the leaf's kind (Dense
kernels transpose, Conv kernels go HWIO -> OIHW). A `Layout` is data on top of that: regex
renames from the canonical key to the layout's key, and the keys its files may carry that are
not parameters (saved buffers), which are ignored on import.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swin_jax.models import param_shapes

# (Flax leaf name, ndim) -> axis permutation taking the Flax tensor to the PyTorch tensor.
TORCH_FROM_FLAX_AXES: dict[tuple[str, int], tuple[int, ...]] = {
    ("kernel", 2): (1, 0),  # Dense (in, out) -> Linear (out, in)
    ("kernel", 4): (3, 2, 0, 1),  # Conv HWIO -> OIHW
}
# Flax leaf name -> PyTorch leaf name
TORCH_LEAF_NAMES = {"kernel": "weight", "scale": "weight"}


@dataclass(frozen=True)
class Layout:
    """A PyTorch checkpoint layout, as data read by the converter engine."""

    name: str
    description: str
    renames: tuple[tuple[str, str], ...] = ()  # (regex on the canonical key, replacement), in order
    ignored: tuple[str, ...] = ()  # regexes of non-parameter keys files may hold (saved buffers)

    def key(self, canonical: str) -> str:
        for pattern, replacement in self.renames:
            canonical = re.sub(pattern, replacement, canonical)
        return canonical

    def is_ignored(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.ignored)


LAYOUTS: dict[str, Layout] = {
    "timm": Layout(
        "timm",
        "timm's state_dict (also Hugging Face hub copies of timm weights)",
        ignored=(r"(^|\.)relative_position_index$", r"(^|\.)attn_mask$"),
    ),
}


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
    flax_path: tuple[str, ...]
    axes: tuple[int, ...]  # Flax -> torch permutation
    flax_shape: tuple[int, ...]

    @property
    def torch_shape(self) -> tuple[int, ...]:
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


def _specs(model: nn.Module, layout: Layout) -> dict[str, _Spec]:
    specs = {}
    for path, leaf in traverse_util.flatten_dict(param_shapes(model)).items():
        axes = TORCH_FROM_FLAX_AXES.get((path[-1], len(leaf.shape)), tuple(range(len(leaf.shape))))
        specs[layout.key(canonical_key(path))] = _Spec(path, axes, tuple(leaf.shape))
    return specs


def _to_numpy(value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        import torch  # only reached when torch tensors were passed in

        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bf16
    return np.asarray(value)


def _describe(model: nn.Module, layout: Layout) -> str:
    return f"checkpoint does not match the {type(model).__name__} model ({layout.name} layout)"


def from_torch(model: nn.Module, state_dict: Mapping[str, Any], layout: str | Layout = "timm") -> dict:
    """Convert a PyTorch state_dict (torch tensors or numpy arrays) into `model`'s params pytree.

    Saved buffers (`relative_position_index`, `attn_mask`) are ignored. Any missing, unexpected
    or mis-shaped key raises one `CheckpointMismatchError` listing all of them.
    """
    layout = get_layout(layout)
    specs = _specs(model, layout)
    tensors = {k: _to_numpy(v) for k, v in state_dict.items() if not layout.is_ignored(k)}
    missing = [(k, s.torch_shape) for k, s in specs.items() if k not in tensors]
    unexpected = [(k, tuple(v.shape)) for k, v in tensors.items() if k not in specs]
    misshaped = [
        (k, tuple(tensors[k].shape), s.torch_shape)
        for k, s in specs.items() if k in tensors and tuple(tensors[k].shape) != s.torch_shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(_describe(model, layout), missing, unexpected, misshaped)
    flat = {
        s.flax_path: jnp.asarray(np.transpose(tensors[k], np.argsort(s.axes)).astype(np.float32))
        for k, s in specs.items()
    }
    return traverse_util.unflatten_dict(flat)


def to_torch(model: nn.Module, params: Mapping[str, Any], layout: str | Layout = "timm") -> dict[str, np.ndarray]:
    """Convert `model`'s params pytree (or any pytree shaped like it, e.g. gradients) into a
    PyTorch state_dict of numpy arrays in `layout`; `torch.from_numpy` each to load it."""
    layout = get_layout(layout)
    specs = _specs(model, layout)
    by_path = {s.flax_path: (k, s) for k, s in specs.items()}
    flat = traverse_util.flatten_dict(dict(params))
    missing = [("/".join(p), s.flax_shape) for p, (_, s) in by_path.items() if p not in flat]
    unexpected = [("/".join(p), tuple(np.shape(v))) for p, v in flat.items() if p not in by_path]
    misshaped = [
        ("/".join(p), tuple(np.shape(flat[p])), s.flax_shape)
        for p, (_, s) in by_path.items() if p in flat and tuple(np.shape(flat[p])) != s.flax_shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(
            f"params do not match the {type(model).__name__} model", missing, unexpected, misshaped
        )
    # np.array copies: writable, C-ordered arrays that torch.from_numpy takes without warnings
    return {k: np.array(np.transpose(np.asarray(flat[s.flax_path]), s.axes), order="C") for k, s in specs.items()}



def infer_num_classes(state_dict: Mapping[str, Any], config_cls: type, layout: str | Layout = "timm") -> int:
    """Class count of a checkpoint from its classifier weight; 0 when it has no classifier."""
    head = state_dict.get(get_layout(layout).key(config_cls.head_key))
    return 0 if head is None else int(head.shape[0])
