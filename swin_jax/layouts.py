"""Checkpoint layouts as data: key templates and tensor transforms, per model family.

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


# ---------------------------------------------------------------------------------------------
# The layouts

# saved buffers of Swin files: V1's and V2's index and mask, V2's log-spaced coordinates
SWIN_BUFFERS = (r"(^|\.)relative_position_index$", r"(^|\.)attn_mask$", r"(^|\.)relative_coords_table$")
R = Rule


def _google_vit(name: str, description: str, prefix: str, pos: str, attn: str, norm2: str, mlp: str) -> Layout:
    """Google's JAX ViT names: vit_jax (`Transformer/posembed_input`, MHA_1, LayerNorm_2,
    MlpBlock_3) and big_vision (`pos_embedding`, MHA_0, LayerNorm_1, MlpBlock_0, under params/)."""
    block = prefix + "Transformer/encoderblock_{i}/"
    mha = block + attn + "/"
    return Layout(name, description, "^" + re.escape(prefix + "Transformer/encoderblock_0/"), {"vit": (
        R("cls_token", prefix + "cls"),
        R("pos_embed", prefix + pos),
        R("patch_embed.proj.weight", prefix + "embedding/kernel", "conv_hwio"),
        R("patch_embed.proj.bias", prefix + "embedding/bias"),
        R("blocks.{i}.norm1.weight", block + "LayerNorm_0/scale"),
        R("blocks.{i}.norm1.bias", block + "LayerNorm_0/bias"),
        R("blocks.{i}.attn.qkv.weight", tuple(mha + f"{n}/kernel" for n in ("query", "key", "value")),
          "qkv_heads_kernel"),
        R("blocks.{i}.attn.qkv.bias", tuple(mha + f"{n}/bias" for n in ("query", "key", "value")), "qkv_heads_bias"),
        R("blocks.{i}.attn.proj.weight", mha + "out/kernel", "out_heads_kernel"),
        R("blocks.{i}.attn.proj.bias", mha + "out/bias"),
        R("blocks.{i}.norm2.weight", block + f"{norm2}/scale"),
        R("blocks.{i}.norm2.bias", block + f"{norm2}/bias"),
        R("blocks.{i}.mlp.fc1.weight", block + f"{mlp}/Dense_0/kernel", "transpose"),
        R("blocks.{i}.mlp.fc1.bias", block + f"{mlp}/Dense_0/bias"),
        R("blocks.{i}.mlp.fc2.weight", block + f"{mlp}/Dense_1/kernel", "transpose"),
        R("blocks.{i}.mlp.fc2.bias", block + f"{mlp}/Dense_1/bias"),
        R("norm.weight", prefix + "Transformer/encoder_norm/scale"),
        R("norm.bias", prefix + "Transformer/encoder_norm/bias"),
        R("fc_norm.{rest}", (), why="Google's ViT normalises the tokens before pooling; build the model with "
                                    "fc_norm=False to use this layout"),
        R("head.weight", prefix + "head/kernel", "transpose"),
        R("head.bias", prefix + "head/bias"),
    )})


def _hugging_face_swinv2(prefix: str, head: Rule) -> tuple[Rule, ...]:
    """transformers' Swinv2: v4 names in v4 and v5 alike; separate q/k/v Linear layers, the
    key's without a bias (timm's fused `qkv.weight` and its `q_bias`, `v_bias`); `layernorm_before`
    is timm's norm1, which V2 applies after the attention."""
    block = prefix + "encoder.layers.{i}.blocks.{j}."
    attn = block + "attention.self."
    return (
        R("patch_embed.proj.{rest}", prefix + "embeddings.patch_embeddings.projection.{rest}"),
        R("patch_embed.norm.{rest}", prefix + "embeddings.norm.{rest}"),
        R("layers.{i}.blocks.{j}.norm1.{rest}", block + "layernorm_before.{rest}"),
        R("layers.{i}.blocks.{j}.norm2.{rest}", block + "layernorm_after.{rest}"),
        R("layers.{i}.blocks.{j}.attn.qkv.weight", tuple(attn + f"{n}.weight" for n in ("query", "key", "value")),
          "split3"),
        R("layers.{i}.blocks.{j}.attn.q_bias", attn + "query.bias"),
        R("layers.{i}.blocks.{j}.attn.v_bias", attn + "value.bias"),
        R("layers.{i}.blocks.{j}.attn.logit_scale", attn + "logit_scale"),
        R("layers.{i}.blocks.{j}.attn.cpb_mlp.{rest}", attn + "continuous_position_bias_mlp.{rest}"),
        R("layers.{i}.blocks.{j}.attn.proj.{rest}", block + "attention.output.dense.{rest}"),
        R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", block + "intermediate.dense.{rest}"),
        R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", block + "output.dense.{rest}"),
        R("layers.{i}.downsample.{rest}", prefix + "encoder.layers.{i-1}.downsample.{rest}"),
        R("norm.{rest}", prefix + "layernorm.{rest}"),
        head,
    )


def _hugging_face(name: str, description: str, v4: bool, bare: bool) -> Layout:
    """transformers' Swin/Swinv2/ViT: v5 state_dicts (q_proj, ..., `vit.layers`) or the v4 names
    that checkpoint files on the hub carry (attention.self.query, ..., `vit.encoder.layer`);
    Swinv2 has the v4 names in both. `bare`: SwinModel / Swinv2Model / ViTModel (no prefix, no
    classifier) instead of *ForImageClassification."""
    swin, swinv2, vit = ("", "", "") if bare else ("swin.", "swinv2.", "vit.")
    sb = swin + "encoder.layers.{i}.blocks.{j}."
    vb = vit + ("encoder.layer.{i}." if v4 else "layers.{i}.")
    if v4:
        qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
        vit_qkv = tuple(k.replace(".self.", ".attention.") for k in qkv)
        proj, table, fc1, fc2 = "attention.output.dense", "attention.self.relative_position_bias_table", \
            "intermediate.dense", "output.dense"
    else:
        qkv = vit_qkv = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
        proj, table, fc1, fc2 = "attention.o_proj", "attention.relative_position_bias.relative_position_bias_table", \
            "mlp.fc1", "mlp.fc2"
    if bare:
        why = ("transformers' SwinModel / Swinv2Model / ViTModel has no classifier; use the layout without _model, "
               "or num_classes=0")
        heads = {"swin": R("head.fc.{rest}", (), why=why), "vit": R("head.{rest}", (), why=why)}
    else:
        heads = {"swin": R("head.fc.{rest}", "classifier.{rest}"), "vit": R("head.{rest}", "classifier.{rest}")}
    first_swin = re.escape(sb.format(i=0, j=0) + qkv[0]) + r"\.weight"
    first_vit = re.escape(vb.format(i=0) + vit_qkv[0]) + r"\.weight"
    # Swinv2's names are the same in v4 and v5: its files are detected as the v5 layouts, listed first
    first_swinv2 = re.escape(swinv2 + "encoder.layers.0.blocks.0.attention.self.logit_scale")
    signature = f"^({first_swin}|{first_vit}{'' if v4 else '|' + first_swinv2})$"
    return Layout(name, description, signature, {
        "swin": (
            R("patch_embed.proj.{rest}", swin + "embeddings.patch_embeddings.projection.{rest}"),
            R("patch_embed.norm.{rest}", swin + "embeddings.norm.{rest}"),
            R("layers.{i}.blocks.{j}.norm1.{rest}", sb + "layernorm_before.{rest}"),
            R("layers.{i}.blocks.{j}.norm2.{rest}", sb + "layernorm_after.{rest}"),
            R("layers.{i}.blocks.{j}.attn.qkv.{rest}", tuple(sb + f"{q}.{{rest}}" for q in qkv), "split3"),
            R("layers.{i}.blocks.{j}.attn.proj.{rest}", sb + proj + ".{rest}"),
            R("layers.{i}.blocks.{j}.attn.relative_position_bias_table", sb + table),
            R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", sb + fc1 + ".{rest}"),
            R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", sb + fc2 + ".{rest}"),
            R("layers.{i}.downsample.{rest}", swin + "encoder.layers.{i-1}.downsample.{rest}"),
            R("norm.{rest}", swin + "layernorm.{rest}"),
            heads["swin"],
        ),
        "swinv2": _hugging_face_swinv2(swinv2, heads["swin"]),
        "vit": (
            R("cls_token", vit + "embeddings.cls_token"),
            R("pos_embed", vit + "embeddings.position_embeddings"),
            R("patch_embed.proj.{rest}", vit + "embeddings.patch_embeddings.projection.{rest}"),
            R("blocks.{i}.norm1.{rest}", vb + "layernorm_before.{rest}"),
            R("blocks.{i}.norm2.{rest}", vb + "layernorm_after.{rest}"),
            R("blocks.{i}.attn.qkv.{rest}", tuple(vb + f"{q}.{{rest}}" for q in vit_qkv), "split3"),
            R("blocks.{i}.attn.proj.{rest}", vb + proj + ".{rest}"),
            R("blocks.{i}.mlp.fc1.{rest}", vb + fc1 + ".{rest}"),
            R("blocks.{i}.mlp.fc2.{rest}", vb + fc2 + ".{rest}"),
            R("norm.{rest}", vit + "layernorm.{rest}"),
            R("fc_norm.{rest}", (), why="transformers' ViT pools the class token; use global_pool='token'"),
            heads["vit"],
        ),
    }, ignored=SWIN_BUFFERS + (r"^pooler\.",))  # ViTModel's tanh pooler is not on the classifier path


def _hf_dinov2(name: str, description: str, v4: bool) -> Layout:
    """transformers' Dinov2Model and Dinov2WithRegistersModel: v5 state_dicts (q_proj, ..., o_proj)
    or the v4 names of the hub's files (attention.attention.query, ..., attention.output.dense).
    LayerScale is `layer_scale1.lambda1`; the mask token is written as zeros; the position
    embedding has the class token's row (FOLDS['class_pos_row'])."""
    block = "encoder.layer.{i}."
    if v4:
        qkv = tuple(block + f"attention.attention.{n}.{{rest}}" for n in ("query", "key", "value"))
        proj, signature = block + "attention.output.dense.{rest}", r"^encoder\.layer\.0\.layer_scale1\.lambda1$"
    else:
        qkv = tuple(block + f"attention.{n}_proj.{{rest}}" for n in "qkv")
        proj, signature = block + "attention.o_proj.{rest}", r"^encoder\.layer\.0\.attention\.q_proj\.weight$"
    return Layout(name, description, signature, {"vit": (
        R("cls_token", "embeddings.cls_token"),
        R("reg_token", "embeddings.register_tokens"),
        R("pos_embed", "embeddings.position_embeddings"),
        R("patch_embed.proj.{rest}", "embeddings.patch_embeddings.projection.{rest}"),
        R("blocks.{i}.norm1.{rest}", block + "norm1.{rest}"),
        R("blocks.{i}.attn.qkv.{rest}", qkv, "split3"),
        R("blocks.{i}.attn.proj.{rest}", proj),
        R("blocks.{i}.ls1.gamma", block + "layer_scale1.lambda1"),
        R("blocks.{i}.norm2.{rest}", block + "norm2.{rest}"),
        R("blocks.{i}.mlp.{rest}", block + "mlp.{rest}"),
        R("blocks.{i}.ls2.gamma", block + "layer_scale2.lambda1"),
        R("norm.{rest}", "layernorm.{rest}"),
        R("head.{rest}", (), why="transformers' Dinov2Model has no classifier; use num_classes=0"),
    )}, zeros={"embeddings.mask_token": (1, "embed_dim")}, folds=("class_pos_row",))


def _hf_clip_blocks(block: str) -> tuple[Rule, ...]:
    """The encoder layers that transformers' CLIP and SigLIP share: pre-norm, separate q/k/v."""
    return (
        R("blocks.{i}.norm1.{rest}", block + "layer_norm1.{rest}"),
        R("blocks.{i}.attn.qkv.{rest}", tuple(block + f"self_attn.{n}_proj.{{rest}}" for n in "qkv"), "split3"),
        R("blocks.{i}.attn.proj.{rest}", block + "self_attn.out_proj.{rest}"),
        R("blocks.{i}.norm2.{rest}", block + "layer_norm2.{rest}"),
        R("blocks.{i}.mlp.{rest}", block + "mlp.{rest}"),
    )


def _hf_clip(name: str, description: str, prefix: str) -> Layout:
    """transformers' CLIP image tower: CLIPVisionModel (no prefix, no projection) or the image
    side of CLIPModel / CLIPVisionModelWithProjection files (`vision_model.`, with the bias-free
    `visual_projection` as timm's head). The class embedding is a vector, the position embedding
    an Embedding table without the batch axis; the patch convolution has no bias (timm's
    pre_norm=True models)."""
    if prefix:
        head = (R("head.weight", "visual_projection.weight"),
                R("head.bias", (), fixed=0.0, why="CLIP's visual_projection has no bias"))
    else:
        head = (R("head.{rest}", (), why="transformers' CLIPVisionModel has no projection; use num_classes=0, or "
                                         "the hf_clip layout, whose files have visual_projection"),)
    return Layout(name, description, "^" + re.escape(prefix + "pre_layrnorm.weight") + "$", {"vit": (
        R("cls_token", prefix + "embeddings.class_embedding", "flat_token"),
        R("pos_embed", prefix + "embeddings.position_embedding.weight", "no_batch_axis"),
        R("patch_embed.proj.weight", prefix + "embeddings.patch_embedding.weight"),
        R("patch_embed.proj.bias", (), why="CLIP's patch convolution has no bias; create the model with pre_norm=True"),
        R("norm_pre.{rest}", prefix + "pre_layrnorm.{rest}"),
        *_hf_clip_blocks(prefix + "encoder.layers.{i}."),
        R("norm.{rest}", prefix + "post_layernorm.{rest}"),
        *head,
    )}, ignored=(r"(^|\.)position_ids$",) + ((r"^(?!vision_model\.|visual_projection\.)",) if prefix else ()))


def _hf_siglip(name: str, description: str, prefix: str) -> Layout:
    """transformers' SigLIP image tower: SiglipVisionModel (no prefix) or the image side of
    SiglipModel files (`vision_model.`). No class token; the attention-pooling head's fused
    `in_proj` holds timm's `attn_pool.q` (first third) and `attn_pool.kv` (last two thirds)."""
    head = prefix + "head."
    return Layout(name, description, "^" + re.escape(prefix + "post_layernorm.weight") + "$", {"vit": (
        R("pos_embed", prefix + "embeddings.position_embedding.weight", "no_batch_axis"),
        R("patch_embed.proj.{rest}", prefix + "embeddings.patch_embedding.{rest}"),
        *_hf_clip_blocks(prefix + "encoder.layers.{i}."),
        R("norm.{rest}", prefix + "post_layernorm.{rest}"),
        R("attn_pool.latent", head + "probe"),
        R("attn_pool.q.{rest}", head + "attention.in_proj_{rest}", part=(0, 3)),
        R("attn_pool.kv.{rest}", head + "attention.in_proj_{rest}", part=(1, 3, 2)),
        R("attn_pool.proj.{rest}", head + "attention.out_proj.{rest}"),
        R("attn_pool.norm.{rest}", head + "layernorm.{rest}"),
        R("attn_pool.mlp.{rest}", head + "mlp.{rest}"),
        R("head.{rest}", (), why="SigLIP's image tower has no classifier; use num_classes=0"),
    )}, ignored=(r"(^|\.)position_ids$",) + ((r"^(?!vision_model\.)",) if prefix else ()))


_OPENCLIP_BLOCK = "visual.transformer.resblocks.{i}."
_OPENCLIP = Layout(
    "openclip", "OpenCLIP / OpenAI CLIP image tower (`visual.*`; the text tower is ignored)",
    r"^visual\.(class_embedding|conv1\.weight)$", {"vit": (
        R("cls_token", "visual.class_embedding", "flat_token"),
        R("pos_embed", "visual.positional_embedding", "no_batch_axis"),
        R("patch_embed.proj.weight", "visual.conv1.weight"),
        R("patch_embed.proj.bias", (), why="CLIP's patch convolution has no bias; create the model with pre_norm=True"),
        R("norm_pre.{rest}", "visual.ln_pre.{rest}"),
        R("blocks.{i}.norm1.{rest}", _OPENCLIP_BLOCK + "ln_1.{rest}"),
        R("blocks.{i}.attn.qkv.weight", _OPENCLIP_BLOCK + "attn.in_proj_weight"),
        R("blocks.{i}.attn.qkv.bias", _OPENCLIP_BLOCK + "attn.in_proj_bias"),
        R("blocks.{i}.attn.proj.{rest}", _OPENCLIP_BLOCK + "attn.out_proj.{rest}"),
        R("blocks.{i}.norm2.{rest}", _OPENCLIP_BLOCK + "ln_2.{rest}"),
        R("blocks.{i}.mlp.fc1.{rest}", _OPENCLIP_BLOCK + "mlp.c_fc.{rest}"),
        R("blocks.{i}.mlp.fc2.{rest}", _OPENCLIP_BLOCK + "mlp.c_proj.{rest}"),
        R("norm.{rest}", "visual.ln_post.{rest}"),
        R("head.weight", "visual.proj", "transpose"),  # (D, out)
        R("head.bias", (), fixed=0.0, why="OpenCLIP's projection visual.proj has no bias"),
    )}, ignored=(r"^(?!visual\.)",))  # the text tower, logit_scale, ...

_DINOV2 = Layout(
    "dinov2", "facebookresearch/dinov2 backbones (timm's names but `register_tokens`, `mask_token`, and a "
              "class-token row in `pos_embed`)",
    r"^(mask_token|register_tokens)$", {"vit": (
        R("reg_token", "register_tokens"),
        # the rest under timm's names: what DINOv2's ViT holds (no pre-norm, qk-norm or pooling head)
        *(R(key, key) for key in ("cls_token", "pos_embed", "patch_embed.proj.{rest}", "norm.{rest}", *(
            "blocks.{i}." + part for part in ("norm1.{rest}", "attn.qkv.{rest}", "attn.proj.{rest}", "ls1.gamma",
                                              "norm2.{rest}", "mlp.fc1.{rest}", "mlp.fc2.{rest}", "ls2.gamma")))),
        R("head.{rest}", (), why="DINOv2's backbones have no classifier; use num_classes=0"),
    )}, zeros={"mask_token": (1, "embed_dim")}, folds=("class_pos_row",))

_OFFICIAL_SWIN = (R("layers.{i}.downsample.{rest}", "layers.{i-1}.downsample.{rest}"), R("head.fc.{rest}", "head.{rest}"))
_TORCHVISION_SWIN = (
    R("patch_embed.proj.{rest}", "features.0.0.{rest}"),
    R("patch_embed.norm.{rest}", "features.0.2.{rest}"),
    R("layers.{i}.blocks.{j}.mlp.fc1.{rest}", "features.{2*i+1}.{j}.mlp.0.{rest}"),
    R("layers.{i}.blocks.{j}.mlp.fc2.{rest}", "features.{2*i+1}.{j}.mlp.3.{rest}"),
    R("layers.{i}.blocks.{j}.{rest}", "features.{2*i+1}.{j}.{rest}"),
    R("layers.{i}.downsample.{rest}", "features.{2*i}.{rest}"),
    R("head.fc.{rest}", "head.{rest}"),
    R("norm.{rest}", "norm.{rest}"),
)
_BLOCK = "layers.{i}.blocks.{j}."

_LAYOUT_LIST = [
    # Detection takes the first layout whose signature matches, so the more specific come first.
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
    _DINOV2,  # before timm: the same names and more
    Layout("timm", "timm's state_dict (also Hugging Face hub copies of timm weights)",
           r"^(layers\.\d+\.blocks|blocks)\.0\.norm1\.weight$", {"swin": (), "swinv2": (), "vit": ()},
           ignored=SWIN_BUFFERS, passthrough=True),
    Layout(
        "torchvision", "torchvision's swin_t/s/b, swin_v2_t/s/b and vit_b_16/b_32/l_16/l_32/h_14",
        r"^(features\.0\.0\.weight|encoder\.layers\.encoder_layer_0\.ln_1\.weight)$",
        {
            "swin": _TORCHVISION_SWIN,
            # one fused qkv.bias: thirds q_bias, key (zero: torchvision zeroes it in every forward pass), v_bias
            "swinv2": (
                R(_BLOCK + "attn.q_bias", "features.{2*i+1}.{j}.attn.qkv.bias", part=(0, 3)),
                R(_BLOCK + "attn.v_bias", "features.{2*i+1}.{j}.attn.qkv.bias", part=(2, 3)),
                *_TORCHVISION_SWIN,
            ),
            "vit": (
                R("cls_token", "class_token"),
                R("pos_embed", "encoder.pos_embedding"),
                R("patch_embed.proj.{rest}", "conv_proj.{rest}"),
                R("blocks.{i}.norm1.{rest}", "encoder.layers.encoder_layer_{i}.ln_1.{rest}"),
                R("blocks.{i}.norm2.{rest}", "encoder.layers.encoder_layer_{i}.ln_2.{rest}"),
                R("blocks.{i}.attn.qkv.weight", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight"),
                R("blocks.{i}.attn.qkv.bias", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias"),
                R("blocks.{i}.attn.proj.{rest}", "encoder.layers.encoder_layer_{i}.self_attention.out_proj.{rest}"),
                R("blocks.{i}.mlp.fc1.{rest}", "encoder.layers.encoder_layer_{i}.mlp.0.{rest}"),
                R("blocks.{i}.mlp.fc2.{rest}", "encoder.layers.encoder_layer_{i}.mlp.3.{rest}"),
                R("norm.{rest}", "encoder.ln.{rest}"),
                R("fc_norm.{rest}", (), why="torchvision's ViT pools the class token; use global_pool='token'"),
                R("head.{rest}", "heads.head.{rest}"),
            ),
        },
        ignored=SWIN_BUFFERS,
        buffers={"swin": ((_BLOCK + "attn.relative_position_index", "relative_position_index_flat"),),
                 "swinv2": ((_BLOCK + "attn.relative_coords_table", "relative_coords_table"),
                            (_BLOCK + "attn.relative_position_index", "relative_position_index_flat"))},
    ),
    _OPENCLIP,
    _hf_dinov2("hf_dinov2", "transformers v5 Dinov2Model / Dinov2WithRegistersModel", False),
    # before hf_v4_model, whose ViT names are DINOv2's v4 names too
    _hf_dinov2("hf_v4_dinov2", "transformers v4 Dinov2Model / Dinov2WithRegistersModel names, as the hub's files hold "
                               "them", True),
    _hf_clip("hf_clip_vision", "transformers CLIPVisionModel (no projection)", ""),
    _hf_clip("hf_clip", "transformers CLIPModel / CLIPVisionModelWithProjection files: the image tower and "
                        "visual_projection (the text tower is ignored)", "vision_model."),
    # after the CLIP layouts, whose files have post_layernorm too
    _hf_siglip("hf_siglip_vision", "transformers SiglipVisionModel", ""),
    _hf_siglip("hf_siglip", "transformers SiglipModel files: the image tower (the text tower is ignored)",
               "vision_model."),
    _hugging_face("hf", "transformers v5 SwinForImageClassification / Swinv2ForImageClassification / "
                        "ViTForImageClassification", False, False),
    _hugging_face("hf_model", "transformers v5 SwinModel / Swinv2Model / ViTModel (no classifier)", False, True),
    _hugging_face("hf_v4", "transformers v4 names, as checkpoint files on the hub hold them "
                           "(Swinv2's are the same as hf's)", True, False),
    _hugging_face("hf_v4_model", "transformers v4 SwinModel / Swinv2Model / ViTModel names (no classifier)", True, True),
    _google_vit("big_vision", "big_vision .npz, unscanned blocks (ViT only)", "params/", "pos_embedding",
                "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
    _google_vit("vit_jax", "Google's vit_jax .npz (ViT only)", "", "Transformer/posembed_input/pos_embedding",
                "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
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
