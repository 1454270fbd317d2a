"""The engine of the checkpoint layouts: key templates (`Rule`), tensor transforms (`TRANSFORMS`),
folds (`FOLDS`) and the `Layout` that holds one library's rules; the tables themselves are in the
other modules of `swin_jax.layouts`, one per library.

Every layout is written against the canonical key set, which is timm's state_dict. A `Rule`
pairs a canonical template with the layout's template(s):

    Rule("layers.{i}.downsample.{rest}", "layers.{i-1}.downsample.{rest}")

`{i}`, `{j}` are integers and may appear as affine forms (`{i-1}`, `{2*i+1}`) on either side;
`{rest}` is any text. Rules translate both ways: canonical -> layout for export (and to know
what a model needs), layout -> canonical for import and `inspect`. Several layout templates
split one canonical tensor (HF's q/k/v projections); `transform` names the tensor operation.
Several canonical tensors can also share one layout tensor as equal slices of it (`part`):
torchvision's one Swin V2 `qkv.bias` holds timm's `q_bias`, a zero key bias and `v_bias`.
In timm's own layout and Microsoft's (timm's names with a few renames, `passthrough`) keys that
no rule matches keep their canonical name and tensor; every other layout's rules name every
tensor it holds, and a model tensor none of them matches is an error. The converter engine in
`swin_jax.convert` reads these tables; nothing here knows about Flax.

Three things a per-tensor rule cannot say are data too. A rule's `fixed` value: the layout does
not store that canonical tensor because it is constant there (OpenCLIP's projection has no bias:
timm's `head.bias` is zero), so import fills it and export checks it. A layout's `zeros`: tensors
the library loads strictly that the canonical set lacks (DINOv2's `mask_token`), written as zeros
on export and ignored on import. A layout's `folds` (names in `FOLDS`): conversions of several
canonical tensors together, such as DINOv2's position embedding, which always has a row for the
class token, against timm's register models, which add that row to the class token instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
from swin_jax.arguments import InputError


# ---------------------------------------------------------------------------------------------
# Tensor transforms: name -> (canonical tensor -> layout tensors, layout tensors -> canonical).
# Written with array methods and slicing, so they also run under jax.eval_shape.


def to_numpy(value: Any) -> np.ndarray:
    """A checkpoint tensor as a numpy array: torch tensors detached and moved to the CPU, their
    floating types (bfloat16, float16, float64) as float32; anything else through np.asarray."""
    if type(value).__module__.startswith("torch"):  # recognised without importing torch
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()  # numpy has no bfloat16
    return np.asarray(value)


def _split3(t: Any) -> list:
    third = t.shape[0] // 3
    return [t[i * third:(i + 1) * third] for i in range(3)]


def _concat(ts: Sequence[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(t) for t in ts], axis=0)


Transform = tuple[Callable[[Any, Any], list], Callable[[Sequence[Any], Any], Any]]

TRANSFORMS: dict[str, Transform] = {
    "same": (lambda t, cfg: [t], lambda ts, cfg: ts[0]),
    # Linear (out, in) <-> Dense kernel (in, out)
    "transpose": (lambda t, cfg: [t.T], lambda ts, cfg: np.asarray(ts[0]).T),
    # Conv OIHW <-> HWIO
    "conv_hwio": (lambda t, cfg: [t.transpose(2, 3, 1, 0)], lambda ts, cfg: np.asarray(ts[0]).transpose(3, 2, 0, 1)),
    # fused qkv (3D, ...) <-> separate q, k, v (D, ...)
    "split3": (lambda t, cfg: _split3(t), lambda ts, cfg: _concat(ts)),
    # fused qkv Linear (3D, D) <-> query/key/value kernels (D, heads, head_dim)
    "qkv_heads_kernel": (
        lambda t, cfg: [w.T.reshape(w.shape[1], cfg.num_heads, -1) for w in _split3(t)],
        lambda ts, cfg: _concat([np.asarray(k).reshape(k.shape[0], -1).T for k in ts]),
    ),
    # fused qkv bias (3D,) <-> query/key/value biases (heads, head_dim)
    "qkv_heads_bias": (
        lambda t, cfg: [b.reshape(cfg.num_heads, -1) for b in _split3(t)],
        lambda ts, cfg: _concat([np.asarray(b).reshape(-1) for b in ts]),
    ),
    # attention output Linear (D, D) <-> out kernel (heads, head_dim, D)
    "out_heads_kernel": (
        lambda t, cfg: [t.T.reshape(cfg.num_heads, -1, t.shape[0])],
        lambda ts, cfg: np.asarray(ts[0]).reshape(-1, ts[0].shape[-1]).T,
    ),
    # a token (1, 1, D) <-> a vector (D,): CLIP's class embedding
    "flat_token": (lambda t, cfg: [t.reshape(-1)], lambda ts, cfg: np.asarray(ts[0]).reshape(1, 1, -1)),
    # a table with a batch axis (1, N, D) <-> without (N, D): CLIP's and SigLIP's position embeddings
    "no_batch_axis": (lambda t, cfg: [t[0]], lambda ts, cfg: np.asarray(ts[0])[None]),
}


# ---------------------------------------------------------------------------------------------
# Key templates


_PLACEHOLDER = re.compile(r"\{([^}]*)\}")
_AFFINE = re.compile(r"^(?:(\d+)\*)?([a-z])(?:([+-])(\d+))?$")


def _parse(template: str) -> tuple[re.Pattern, list[tuple[str, int, int]]]:
    """Regex of a template and, per placeholder, (variable, scale, offset); `rest` is text."""
    pattern, slots, pos = "", [], 0
    for m in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[pos:m.start()])
        expr = m.group(1)
        if expr == "rest":
            pattern += "(.+)"
            slots.append(("rest", 1, 0))
        else:
            a = _AFFINE.match(expr)
            if not a:
                raise ValueError(f"bad placeholder {{{expr}}} in {template!r}")
            scale, var, sign, offset = a.groups()
            pattern += r"(\d+)"
            slots.append((var, int(scale or 1), (-1 if sign == "-" else 1) * int(offset or 0)))
        pos = m.end()
    pattern += re.escape(template[pos:])
    return re.compile(pattern), slots


def bind_template(template: str, key: str) -> Optional[dict[str, Any]]:
    """Variables of `template` that produce `key`, or None if it does not match."""
    regex, slots = _parse(template)
    m = regex.fullmatch(key)
    if not m:
        return None
    values: dict[str, Any] = {}
    for (var, scale, offset), text in zip(slots, m.groups()):
        if var == "rest":
            value: Any = text
        else:
            value, remainder = divmod(int(text) - offset, scale)
            if remainder or value < 0:
                return None
        if values.setdefault(var, value) != value:
            return None
    return values


def _fill(template: str, values: dict[str, Any]) -> str:
    def one(m: re.Match) -> str:
        expr = m.group(1)
        if expr == "rest":
            return values["rest"]
        scale, var, sign, offset = _AFFINE.match(expr).groups()
        return str(int(scale or 1) * values[var] + (-1 if sign == "-" else 1) * int(offset or 0))

    return _PLACEHOLDER.sub(one, template)


WHOLE = (0, 1)  # a rule's `part` when its tensors are whole layout tensors


def part_span(part: tuple[int, ...]) -> tuple[int, int, int]:
    """(index, count, span) of a `part`: (index, count) covers one slice, (index, count, span)
    `span` consecutive slices from `index` (SigLIP's fused in_proj holds q in its first third and
    timm's kv in its last two)."""
    index, count, span = (*part, 1)[:3]
    return index, count, span


def take_part(tensor: Any, part: tuple[int, ...]) -> Any:
    """Slices `index` to `index + span` of `count` equal slices along axis 0 of a layout tensor."""
    index, count, span = part_span(part)
    if count == 1:
        return tensor
    size = tensor.shape[0] // count
    return tensor[index * size:(index + span) * size]


def join_parts(pieces: dict[int, np.ndarray], count: int, spans: Optional[dict[int, int]] = None) -> np.ndarray:
    """A layout tensor from its slices {index: tensor} (each covering `spans[index]` slices, 1 by
    default); the slices no rule fills are zeros."""
    if count == 1:
        return np.array(pieces[0], order="C")
    spans = spans or {}
    index, like = next(iter(pieces.items()))
    unit = np.zeros_like(like[:like.shape[0] // spans.get(index, 1)])
    out, i = [], 0
    while i < count:
        out.append(np.asarray(pieces.get(i, unit)))
        i += spans.get(i, 1) if i in pieces else 1
    return np.concatenate(out, axis=0)


@dataclass(frozen=True)
class Rule:
    """A canonical key template and the layout's key template(s). No layout keys: the layout
    cannot hold such a tensor, and `why` says so.

    `part` = (index, count): the (transformed) canonical tensor is slice `index` of `count` equal
    slices along axis 0 of each layout tensor, which other rules' tensors share; slices that no
    rule fills are written as zeros and ignored on reading. (index, count, span): it covers `span`
    consecutive slices from `index`.

    `fixed`, with no layout keys: the layout does not store this tensor because it is that
    constant there; import fills it, export checks that the model's tensor is that constant."""

    canonical: str
    layout: tuple[str, ...] | str
    transform: str = "same"
    why: str = ""
    part: tuple[int, ...] = WHOLE
    fixed: Optional[float] = None

    @property
    def layout_keys(self) -> tuple[str, ...]:
        return (self.layout,) if isinstance(self.layout, str) else tuple(self.layout)


class Plan(NamedTuple):
    """Where one canonical tensor goes in a layout: its layout keys, the tensor transform, and
    the slice of each layout tensor it fills."""

    keys: tuple[str, ...]
    transform: str
    part: tuple[int, ...] = WHOLE
    fixed: Optional[float] = None  # no keys: the layout does not store the tensor, which is this constant


class KeyMatch(NamedTuple):
    """One canonical tensor that a layout key holds: its key, the position of the layout key
    among the rule's layout keys (split tensors), the transform, and its slice of the tensor."""

    canonical: str
    index: int
    transform: str
    part: tuple[int, ...] = WHOLE


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: per model family, the rules from canonical (timm) keys to its keys."""

    name: str
    description: str
    signature: str  # regex that some key of every checkpoint in this layout matches
    rules: dict[str, tuple[Rule, ...]] = field(default_factory=dict)  # family -> rules
    ignored: tuple[str, ...] = ()  # regexes of non-parameter keys files may hold (saved buffers)
    # buffers the library loads strictly, written on export: family -> ((canonical template, kind), ...)
    buffers: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # tensors the library loads strictly that no canonical tensor fills: key -> shape, each entry
    # an int or a config field's name; written as zeros on export, ignored on import
    zeros: dict[str, tuple[int | str, ...]] = field(default_factory=dict)
    folds: tuple[str, ...] = ()  # names in FOLDS, applied where the model's config asks for them
    # True: a canonical key that no rule matches keeps its name (timm's names with a few renames);
    # False: the rules name every tensor the layout holds, and any other cannot be held (a model
    # option the layout's library does not have: exporting it would write keys nothing reads)
    passthrough: bool = False

    def matches(self, keys: Sequence[str]) -> bool:
        """Whether some key carries this layout's signature."""
        return any(re.search(self.signature, k) for k in keys)

    def families(self) -> tuple[str, ...]:
        return tuple(self.rules)

    def plan(self, family: str, canonical: str) -> Plan:
        """The layout keys, tensor transform and slice of one canonical key."""
        if family not in self.rules:
            kinds = " and ".join(dict.fromkeys(re.sub(r"v\d+$", "", f) for f in self.rules))  # swinv2 is a swin
            raise InputError(f"the {self.name} layout holds {kinds} models, not {family} "
                             f"(its families: {', '.join(self.rules)})")
        for rule in self.rules[family]:
            values = bind_template(rule.canonical, canonical)
            if values is not None:
                if not rule.layout_keys and rule.fixed is None:
                    raise InputError(f"the {self.name} layout cannot hold {canonical}: {rule.why}")
                return Plan(tuple(_fill(t, values) for t in rule.layout_keys), rule.transform, rule.part, rule.fixed)
        if not self.passthrough:
            raise InputError(f"the {self.name} layout cannot hold {canonical}: its library's {family} model has no "
                             f"such tensor (save in the timm layout)")
        return Plan((canonical,), "same")

    def canonical(self, family: str, key: str) -> tuple[KeyMatch, ...]:
        """The canonical tensor(s) one of this layout's keys holds: the first rule that matches
        it decides, and where that rule fills a slice, every other slice rule that matches adds
        its own."""
        found: list[KeyMatch] = []
        for rule in self.rules.get(family, ()):
            for index, template in enumerate(rule.layout_keys):
                values = bind_template(template, key)
                if values is not None and (not found or found[0].part != WHOLE and rule.part != WHOLE):
                    found.append(KeyMatch(_fill(rule.canonical, values), index, rule.transform, rule.part))
        return tuple(found) or (KeyMatch(key, 0, "same"),)

    def is_ignored(self, key: str) -> bool:
        return key in self.zeros or any(re.search(pattern, key) for pattern in self.ignored)

    def zero_tensors(self, config: Any) -> dict[str, np.ndarray]:
        """The `zeros` tensors for a model of `config`."""
        return {key: np.zeros(tuple(d if isinstance(d, int) else getattr(config, d) for d in shape), np.float32)
                for key, shape in self.zeros.items()}


# ---------------------------------------------------------------------------------------------
# Folds: several canonical tensors converted together


class Fold(NamedTuple):
    """A conversion of several canonical tensors together, which per-tensor rules cannot express.

    `applies(config)`: whether a model of that config needs it. `keys`: the canonical tensors it
    reads (a file without one of them is left alone, and reported as usual). `to_layout` and
    `from_layout` take and return {canonical key: tensor}: the model's tensors as the layout
    keeps them, and back. `implied_by`: a canonical key whose presence in a file means the model
    it was made for needs the fold (`inspect` has a file but no model config)."""

    applies: Callable[[Any], bool]
    keys: tuple[str, ...]
    to_layout: Callable[[dict, Any], dict]
    from_layout: Callable[[dict, Any], dict]
    implied_by: str


def _class_row_out(t: dict, cfg: Any) -> dict:
    pos = np.asarray(t["pos_embed"])
    return {"cls_token": t["cls_token"], "pos_embed": np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)}


def _class_row_in(t: dict, cfg: Any) -> dict:
    pos = np.asarray(t["pos_embed"])
    return {"cls_token": np.asarray(t["cls_token"]) + pos[:, :1], "pos_embed": pos[:, 1:]}


FOLDS: dict[str, Fold] = {
    # DINOv2 (facebookresearch's and transformers'): the position embedding always has a row for
    # the class token, which is added to it; timm's register models (no_embed_class) add that row
    # to the class token instead and drop it (timm's _convert_dinov2). Exported: the class token
    # unchanged and a zero row, the same function.
    "class_pos_row": Fold(lambda cfg: bool(cfg.class_token and cfg.no_embed_class), ("cls_token", "pos_embed"),
                          _class_row_out, _class_row_in, implied_by="reg_token"),
}

