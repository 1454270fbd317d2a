"""Weight conversion between swin_jax params and every checkpoint layout in `swin_jax.layouts`.

One engine reads every layout table. Our Flax module names mirror timm's, so each parameter has
a canonical timm key derived mechanically from its Flax path (`layers_1/blocks_0/attn/qkv/kernel`
-> `layers.1.blocks.0.attn.qkv.weight`) and a canonical tensor (timm's: Dense kernels transposed,
Conv kernels HWIO -> OIHW). The layout's rules take it from there to the file's keys and back.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swin_jax.layouts import (FAMILY_NAMES, FOLDS, LAYOUTS, TRANSFORMS, WHOLE, Layout, bind_template, detect_family,
                              detect_layout, get_layout, join_parts, part_span, take_part, to_numpy)
from swin_jax.models import param_shapes
from swin_jax.resample import resample_pos_embed, resize_rel_pos_bias_table
from swin_jax.arguments import InputError

__all__ = [
    "LAYOUTS", "CheckpointFamilyError", "CheckpointMismatchError", "detect_layout", "from_torch", "to_torch",
    "get_layout", "params_as_timm",
]

# (Flax leaf name, ndim) -> axis permutation taking the Flax tensor to the PyTorch tensor.
TORCH_FROM_FLAX_AXES: dict[tuple[str, int], tuple[int, ...]] = {
    ("kernel", 2): (1, 0),  # Dense (in, out) -> Linear (out, in)
    ("kernel", 4): (3, 2, 0, 1),  # Conv HWIO -> OIHW
}
# Flax leaf name -> PyTorch leaf name
TORCH_LEAF_NAMES = {"kernel": "weight", "scale": "weight"}


# Canonical keys whose tensors are resized when the checkpoint was made for another image or
# window size, as timm does it: (template, fn(tensor, model config, template variables)).
def _resize_pos_embed(tensor: np.ndarray, config: Any, where: dict) -> np.ndarray:
    return resample_pos_embed(tensor, config.patch_grid, config.pos_embed_prefix_tokens)


def _resize_bias_table(tensor: np.ndarray, config: Any, where: dict) -> np.ndarray:
    window, _ = config.block_window_shift(where["i"], where["j"])
    return resize_rel_pos_bias_table(tensor, window)


RESIZERS: tuple[tuple[str, Callable[[np.ndarray, Any, dict], np.ndarray]], ...] = (
    ("pos_embed", _resize_pos_embed),
    ("layers.{i}.blocks.{j}.attn.relative_position_bias_table", _resize_bias_table),
)


def _swin_block_buffer(kind: str, config: Any, i: int, j: int) -> np.ndarray | None:
    """A Swin block's non-parameter buffer as the PyTorch code registers it (None: not registered)."""
    from swin_jax.swin import relative_position_index, shifted_window_mask

    window, shift = config.block_window_shift(i, j)
    if kind == "relative_position_index":
        return relative_position_index(window).astype(np.int64)
    if kind == "relative_position_index_flat":  # torchvision
        return relative_position_index(window).astype(np.int64).reshape(-1)
    if kind == "attn_mask":
        if not any(shift):
            return None
        padded = tuple(-(-r // w) * w for r, w in zip(config.stage_resolution(i), window))
        return shifted_window_mask(padded, window, shift)
    if kind == "relative_coords_table":  # Swin V2: (1, 2wh-1, 2ww-1, 2) float32, scaled by the pre-training window
        from swin_jax.swin_v2 import relative_coords_table

        table = relative_coords_table(window, config.pretrained_window_sizes[i])
        return table.reshape(1, 2 * window[0] - 1, 2 * window[1] - 1, 2)
    raise ValueError(f"unknown buffer kind {kind!r}")


class CheckpointMismatchError(InputError):
    """A state_dict does not fit the model: lists every missing, unexpected and mis-shaped key.
    `hints`, first: the model options the difference comes from (`option_hints`)."""

    def __init__(self, what: str, missing: list[tuple[str, tuple]], unexpected: list[tuple[str, tuple]],
                 misshaped: list[tuple[str, tuple, tuple]], hints: Sequence[str] = ()):
        def natural(item: tuple) -> list:  # layers.2 before layers.10
            return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", item[0])]

        missing, unexpected, misshaped = (sorted(x, key=natural) for x in (missing, unexpected, misshaped))
        self.missing, self.unexpected, self.misshaped, self.hints = missing, unexpected, misshaped, list(hints)
        lines = list(hints)
        lines += [f"{what}: {len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped key(s)"]
        lines += [f"  missing     {key} {shape}" for key, shape in missing]
        lines += [f"  unexpected  {key} {shape}" for key, shape in unexpected]
        lines += [f"  mis-shaped  {key}: checkpoint {got}, model expects {want}" for key, got, want in misshaped]
        super().__init__("\n".join(lines))


class CheckpointFamilyError(InputError):
    """A checkpoint of one model family (Swin V1, Swin V2, ViT) given to a model of another."""

    def __init__(self, found: str, expected: str, layout: str, model_name: str):
        from swin_jax.configs import MODEL_CONFIGS

        self.found, self.expected = found, expected
        names = [n for n, (cls, _) in MODEL_CONFIGS.items() if cls.family == found][:2]
        super().__init__(
            f"the checkpoint holds a {FAMILY_NAMES[found]} ({found} family, {layout} layout), but {model_name} is a "
            f"{FAMILY_NAMES[expected]} ({expected}): load it into a {found} model such as {' or '.join(names)}")


@dataclass(frozen=True)
class _Spec:
    """Where one Flax parameter lives in a layout."""

    canonical: str
    flax_path: tuple[str, ...]
    axes: tuple[int, ...]  # Flax -> canonical (torch) permutation
    flax_shape: tuple[int, ...]
    keys: tuple[str, ...]  # layout keys
    transform: str
    shapes: tuple[tuple[int, ...], ...]  # layout shapes (whole tensors, where this fills a slice of each)
    part: tuple[int, ...] = WHOLE  # (index, count[, span]): the slices of each layout tensor this parameter fills
    fixed: Optional[float] = None  # not stored in the layout: the tensor is this constant there

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        return tuple(self.flax_shape[a] for a in self.axes)


def canonical_key(flax_path: tuple[str, ...]) -> str:
    """timm-style key of a Flax param path: `blocks_3` -> `blocks.3`, `kernel`/`scale` -> `weight`."""
    *modules, leaf = flax_path
    parts = [re.sub(r"^(.*)_(\d+)$", r"\1.\2", m) for m in modules]
    return ".".join(parts + [TORCH_LEAF_NAMES.get(leaf, leaf)])


def params_as_timm(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A params pytree (from a .msgpack file, no model needed) as a timm-layout state_dict."""
    out = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        value = np.asarray(value)
        axes = TORCH_FROM_FLAX_AXES.get((path[-1], value.ndim), tuple(range(value.ndim)))
        out[canonical_key(path)] = np.transpose(value, axes)
    return out


def _specs(model: nn.Module, layout: Layout) -> list[_Spec]:
    specs = []
    for path, leaf in traverse_util.flatten_dict(param_shapes(model)).items():
        axes = TORCH_FROM_FLAX_AXES.get((path[-1], len(leaf.shape)), tuple(range(len(leaf.shape))))
        canonical = canonical_key(path)
        plan = layout.plan(model.config.family, canonical)
        to_layout = TRANSFORMS[plan.transform][0]
        shape = jax.ShapeDtypeStruct(tuple(leaf.shape[a] for a in axes), jnp.float32)
        _, count, span = part_span(plan.part)
        shapes = () if plan.fixed is not None else tuple(
            (s.shape[0] // span * count, *s.shape[1:]) for s in jax.eval_shape(lambda t: to_layout(t, model.config), shape))
        specs.append(_Spec(canonical, path, axes, tuple(leaf.shape), plan.keys, plan.transform, shapes, plan.part,
                           plan.fixed))
    return specs


def _resized(spec: _Spec, parts: list[np.ndarray], config: Any) -> np.ndarray | None:
    """The checkpoint tensor resized to the model's grid or window, or None where that does not apply.
    (Its layout's transform first: CLIP's and SigLIP's position embeddings have no batch axis.)"""
    if spec.part != WHOLE:
        return None
    for template, resize in RESIZERS:
        where = bind_template(template, spec.canonical)
        if where is not None:
            try:
                tensor = resize(TRANSFORMS[spec.transform][1](parts, config), config, where)
            except ValueError:
                return None
            return tensor if tuple(tensor.shape) == spec.canonical_shape else None
    return None


def _progress(items: list, enabled: bool, what: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, unit="tensor", leave=False)


def from_torch(model: nn.Module, state_dict: Mapping[str, Any], layout: str | Layout | None = None,
               resize: bool = True, progress: bool = False) -> dict:
    """Convert a checkpoint's tensors (torch tensors or numpy arrays, keyed as in `layout`) into
    `model`'s params pytree. Without `layout`, it is detected from the keys (`detect_layout`).

    Saved buffers (`relative_position_index`, `attn_mask`, V2's `relative_coords_table`) are
    ignored, so Swin V2 weights load at any window (its position bias is continuous). With
    `resize`, tensors made for another image or window size are resized as timm does: ViT
    position embeddings (bicubic, antialiased) and Swin relative position bias tables (timm's
    table interpolation). A checkpoint of another model family raises `CheckpointFamilyError`;
    any other missing, unexpected or mis-shaped key raises one `CheckpointMismatchError` listing all,
    led by the model option the difference comes from where one does (`option_hints`).

    The layout's folds are applied first (DINOv2's class-token row of `pos_embed`), tensors it does
    not store are filled with their constant (OpenCLIP's zero `head.bias`), and its `zeros`
    (DINOv2's `mask_token`) are ignored.
    """
    layout = get_layout(layout or detect_layout(list(state_dict)))
    specs = _specs(model, layout)
    tensors = {k: to_numpy(v) for k, v in state_dict.items() if not layout.is_ignored(k)}
    check_weight_values(tensors)
    tensors = apply_folds(layout, model.config, tensors, to_layout=False)
    claimed = {k for s in specs for k in s.keys}
    # a key that several parameters share (their slices of it) is listed once
    missing = list(dict.fromkeys((k, shape) for s in specs for k, shape in zip(s.keys, s.shapes) if k not in tensors))
    unexpected = [(k, tuple(v.shape)) for k, v in tensors.items() if k not in claimed]
    if missing or unexpected:
        found = detect_family(layout, list(tensors))
        if found is not None and found != model.config.family:
            raise CheckpointFamilyError(found, model.config.family, layout.name, type(model).__name__)
    misshaped, flat = [], {}
    for s in _progress(specs, progress, "converting"):
        if s.fixed is not None:  # not in the layout: the constant it is there
            flat[s.flax_path] = jnp.full(s.flax_shape, s.fixed, jnp.float32)
            continue
        if any(k not in tensors for k in s.keys):
            continue
        parts = [tensors[k] for k in s.keys]
        got = tuple(tuple(p.shape) for p in parts)
        if got == s.shapes:
            canonical = TRANSFORMS[s.transform][1]([take_part(p, s.part) for p in parts], model.config)
        else:
            canonical = _resized(s, parts, model.config) if resize else None
            if canonical is None:
                misshaped += [(k, g, want) for k, g, want in zip(s.keys, got, s.shapes) if g != want]
                continue
        flat[s.flax_path] = jnp.asarray(np.transpose(canonical, np.argsort(s.axes)).astype(np.float32))
    if missing or unexpected or misshaped:
        misshaped = list(dict.fromkeys(misshaped))
        raise CheckpointMismatchError(
            f"checkpoint does not match the {type(model).__name__} model ({layout.name} layout)",
            missing, unexpected, misshaped, option_hints(layout, model.config, specs, missing, unexpected, misshaped))
    return traverse_util.unflatten_dict(flat)


class NonFiniteWeightsWarning(UserWarning):
    """Weights that hold NaN or inf: converted as they are, and named."""


def check_weight_values(tensors: Mapping[str, np.ndarray]) -> None:
    """Weights are floating-point: a tensor of another dtype (ints, bool, complex) cannot hold
    them and is refused by name (casting it would invent weights). Weights holding NaN or inf are
    converted as they are, with a `NonFiniteWeightsWarning` naming them."""
    wrong = [(k, str(v.dtype)) for k, v in tensors.items() if not jnp.issubdtype(v.dtype, jnp.floating)]
    if wrong:
        listed = ", ".join(f"{k} ({d})" for k, d in wrong[:6]) + (f", and {len(wrong) - 6} more" if len(wrong) > 6 else "")
        raise InputError(f"{len(wrong)} weight tensor(s) of a dtype that cannot hold weights: {listed}")
    bad = [(k, int(np.size(v) - np.isfinite(v).sum())) for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        listed = ", ".join(f"{k} ({n} of {np.size(tensors[k])})" for k, n in bad[:6])
        more = f", and {len(bad) - 6} more" if len(bad) > 6 else ""
        warnings.warn(f"{len(bad)} weight tensor(s) hold NaN or inf: {listed}{more}", NonFiniteWeightsWarning,
                      stacklevel=3)


def to_torch(model: nn.Module, params: Mapping[str, Any], layout: str | Layout = "timm",
             buffers: bool = True, progress: bool = False) -> dict[str, np.ndarray]:
    """Convert `model`'s params pytree (or any pytree shaped like it, e.g. gradients) into a dict
    of numpy arrays keyed as in `layout`; for PyTorch layouts, `torch.from_numpy` each to load it.

    With `buffers`, the non-parameter buffers that the layout's library loads strictly (torchvision's
    and Microsoft's saved `relative_position_index`, `attn_mask`, and Swin V2's
    `relative_coords_table`) are written too. Slices of a layout tensor that no parameter fills
    are zeros (the key third of torchvision's Swin V2 `qkv.bias`). The layout's folds are applied,
    its `zeros` written (DINOv2's `mask_token`), and a tensor it does not store must be the constant
    it is there (OpenCLIP has no `head.bias`: a nonzero one raises a ValueError)."""
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
    pieces: dict[str, dict[int, np.ndarray]] = {}  # layout key -> {slice index: tensor}
    counts: dict[str, int] = {}
    spans: dict[str, dict[int, int]] = {}
    for s in _progress(specs, progress, "converting"):
        canonical = np.transpose(np.asarray(flat[s.flax_path]), s.axes)
        if s.fixed is not None:
            _check_fixed(layout, model.config.family, s, canonical)
            continue
        index, count, span = part_span(s.part)
        for key, tensor in zip(s.keys, TRANSFORMS[s.transform][0](canonical, model.config)):
            pieces.setdefault(key, {})[index] = np.asarray(tensor)
            spans.setdefault(key, {})[index] = span
            counts[key] = count
    # join_parts copies: writable, C-ordered arrays that torch.from_numpy takes without warnings
    out = {key: join_parts(parts, counts[key], spans[key]) for key, parts in pieces.items()}
    out = apply_folds(layout, model.config, out, to_layout=True)
    out.update(layout.zero_tensors(model.config))
    cfg, family = model.config, model.config.family
    for template, kind in layout.buffers.get(family, ()) if buffers else ():
        for i, depth in enumerate(cfg.depths):
            for j in range(depth):
                value = _swin_block_buffer(kind, cfg, i, j)
                if value is not None:
                    out[layout.plan(family, template.format(i=i, j=j)).keys[0]] = value
    return out


def infer_num_classes(state_dict: Mapping[str, Any], config_cls: type, layout: str | Layout = "timm") -> int:
    """Class count of a checkpoint from its classifier weight; 0 when it has no classifier."""
    layout = get_layout(layout)
    try:
        plan = layout.plan(config_cls.family, config_cls.head_key)
    except ValueError:  # a layout without classifiers
        return 0
    head = state_dict.get(plan.keys[0])
    if head is None:
        return 0
    if len(np.shape(head)) != 2:  # a classifier weight is a matrix
        raise InputError(f"the checkpoint's classifier {plan.keys[0]} has shape {tuple(np.shape(head))}, not "
                         f"(classes, features)")
    return int(head.shape[-1] if plan.transform == "transpose" else head.shape[0])


# ---------------------------------------------------------------------------------------------
# What per-tensor rules cannot say: folds of several tensors, constant tensors, and the model
# option behind a mismatch.


def apply_folds(layout: Layout, config: Any, tensors: dict[str, np.ndarray], to_layout: bool) -> dict[str, np.ndarray]:
    """`tensors` (the layout's keys) with the layout's folds (`Layout.folds`, `FOLDS`) that a model
    of `config` needs applied: `to_layout` on export, the inverse on import. Each fold reads its
    canonical tensors through the layout's rules (whole tensors) and writes them back the same
    way; a file without one of them is left as it is, to be reported as usual."""
    family = config.family
    for name in layout.folds:
        fold = FOLDS[name]
        if not fold.applies(config):
            continue
        plans = {key: layout.plan(family, key) for key in fold.keys}
        if any(p.part != WHOLE or p.fixed is not None for p in plans.values()):
            raise ValueError(f"fold {name!r} of the {layout.name} layout reads whole tensors only")
        if any(k not in tensors for p in plans.values() for k in p.keys):
            continue
        canonical = {key: TRANSFORMS[p.transform][1]([tensors[k] for k in p.keys], config) for key, p in plans.items()}
        tensors = {k: v for k, v in tensors.items() if not any(k in p.keys for p in plans.values())}
        for key, value in (fold.to_layout if to_layout else fold.from_layout)(canonical, config).items():
            plan = layout.plan(family, key)
            for k, t in zip(plan.keys, TRANSFORMS[plan.transform][0](np.asarray(value), config)):
                tensors[k] = np.array(t, np.float32, order="C")
    return tensors


def _check_fixed(layout: Layout, family: str, spec: _Spec, tensor: np.ndarray) -> None:
    """Export: a tensor that the layout does not store must be the constant it is there."""
    if not np.all(tensor == spec.fixed):
        why = next(r.why for r in layout.rules[family] if bind_template(r.canonical, spec.canonical) is not None)
        raise InputError(f"the {layout.name} layout cannot hold {spec.canonical} = {np.abs(tensor).max():.3g} "
                         f"(max |value|): {why}; it must be {spec.fixed:g} everywhere")


# Canonical keys that only a model with an option holds: (key, what the tensor is, the option,
# its value for a checkpoint that has the tensor (from the tensor's shape), its value without).
OPTION_KEYS: tuple[tuple[str, Callable[[tuple], str], str, Callable[[tuple], str], str], ...] = (
    ("reg_token", lambda s: f"{s[1]} register tokens", "reg_tokens", lambda s: str(s[1]), "0"),
    ("dist_token", lambda s: "a distillation token", "dist_token", lambda s: "True", "False"),
    ("cls_token", lambda s: "a class token", "class_token", lambda s: "True", "False"),
    ("norm_pre.weight", lambda s: "a LayerNorm before the blocks", "pre_norm", lambda s: "True", "False"),
    ("blocks.0.ls1.gamma", lambda s: "LayerScale", "init_values",
     lambda s: "1e-5 (any number: the scales are in the checkpoint)", "None"),
    ("blocks.0.attn.q_norm.weight", lambda s: "q/k LayerNorms", "qk_norm", lambda s: "True", "False"),
    ("attn_pool.latent", lambda s: "an attention-pooling head", "global_pool", lambda s: "'map'", "'token' or 'avg'"),
)


def option_hints(layout: Layout, config: Any, specs: list[_Spec], missing: list, unexpected: list,
                 misshaped: list) -> list[str]:
    """One line per model option that explains part of a mismatch (`OPTION_KEYS`): the
    checkpoint has register tokens and the model has none, or the other way round, or a different
    count; and a position embedding whose length differs by the prefix tokens (`no_embed_class`)."""
    family = config.family
    model_has = {s.canonical: s.canonical_shape for s in specs}
    file_only = {m.canonical: (key, shape) for key, shape in unexpected for m in layout.canonical(family, key)}
    missing_keys = {k for k, _ in missing}
    model_only = {s.canonical: s.canonical_shape for s in specs if any(k in missing_keys for k in s.keys)}
    wrong = {m.canonical: got for key, got, _ in misshaped for m in layout.canonical(family, key)
             if m.part == WHOLE and m.transform == "same"}  # shapes as the canonical tensors have them
    hints = []
    for key, what, option, value, off in OPTION_KEYS:
        if key in file_only:
            name, shape = file_only[key]
            hints.append(f"the checkpoint has {what(shape)} ({name} {shape}); the model has none: "
                         f"create it with {option}={value(shape)}")
        elif key in model_only:
            hints.append(f"the model has {what(model_only[key])} ({key} {model_only[key]}); the checkpoint has none: "
                         f"create it with {option}={off}")
        elif key in wrong and key in model_has and len(wrong[key]) == len(model_has[key]):
            hints.append(f"the checkpoint has {what(wrong[key])} ({key} {wrong[key]}); the model has "
                         f"{what(model_has[key])}: create it with {option}={value(wrong[key])}")
    pos = wrong.get("pos_embed")
    if pos is not None and "pos_embed" in model_has and family == "vit" and not hints:
        rows, prefix = model_has["pos_embed"][1], config.num_prefix_tokens
        if prefix and pos[1] == rows + prefix and config.no_embed_class:
            hints.append(f"the checkpoint's pos_embed {pos} has rows for the {prefix} prefix token(s) too; the model's "
                         f"covers the patches only: create it with no_embed_class=False")
        elif prefix and pos[1] + prefix == rows and not config.no_embed_class:
            hints.append(f"the checkpoint's pos_embed {pos} covers the patches only; the model's has rows for the "
                         f"{prefix} prefix token(s) too: create it with no_embed_class=True")
    return hints
