"""The optimizer of the Swin recipe in optax: AdamW with a weight-decay mask, linear warm-up then
cosine, global-norm clipping, layer-wise learning-rate decay, optional gradient accumulation."""
from __future__ import annotations

import re
from typing import Any, Optional

import jax
import optax

from swin_jax.convert import canonical_key

# Never decayed (the Swin / timm recipe), besides every 1-D parameter (norms, biases): these
# parameters, and everything inside Swin V2's position-bias MLP (timm's `no_weight_decay`).
NO_DECAY_NAMES = ("bias", "relative_position_bias_table", "pos_embed", "cls_token", "reg_token", "dist_token",
                  "logit_scale")
NO_DECAY_MODULE_PREFIXES = ("cpb_mlp",)


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: matrices and kernels, not 1-D params, biases, bias
    tables, position embeddings, class, register and distillation tokens, Swin V2's logit scales
    and position-bias MLPs.
    (optax's `mask` marks what *is* decayed.)"""

    def decayed(path: tuple, leaf: Any) -> bool:
        names = [str(getattr(p, "key", p)) for p in path]
        if any(n.startswith(NO_DECAY_MODULE_PREFIXES) for n in names[:-1]):
            return False
        return leaf.ndim > 1 and names[-1] not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decayed, params)


# timm's `group_matcher(coarse=False)` of each family, on timm's parameter names: (pattern,
# ordinal prefix, ordinal suffix) tried in order. Parameters are grouped by (prefix, the pattern's
# numbers, suffix), the groups sorted, and each group is one layer; a suffix of MATCH_PREVIOUS
# joins the group before it (the final norm goes with the last block), and what nothing matches
# (the head) is the last layer.
MATCH_PREVIOUS = 99999
_SWIN_LAYERS = [(r"^layers\.(\d+).downsample", (1,), (0,)),  # with the stage's first block
                (r"^layers\.(\d+)\.\w+\.(\d+)", (1,), ()),
                (r"^norm", (1,), (MATCH_PREVIOUS,))]
LAYER_GROUPS: dict[str, list[tuple[str, tuple, tuple]]] = {
    "vit": [(r"^cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre", (0,), ()),
            (r"^blocks\.(\d+)", (1,), ()), (r"^norm", (1,), (MATCH_PREVIOUS,))],
    "swin": [(r"^patch_embed", (0,), ()), *_SWIN_LAYERS],
    "swinv2": [(r"^absolute_pos_embed|patch_embed", (0,), ()), *_SWIN_LAYERS],
}


def layer_ids(names: list[str], family: str) -> dict[str, int]:
    """The layer of each parameter (timm's names), as timm's `param_groups_layer_decay` numbers
    them: 0 for the embedding, then block by block, the head last."""

    def ordinal(name: str) -> tuple[float, ...]:
        for pattern, prefix, suffix in LAYER_GROUPS[family]:
            match = re.match(pattern, name)
            if match:
                return tuple(float(x) for x in (*prefix, *(g for g in match.groups() if g is not None), *suffix))
        return (float("inf"),)

    ordinals = {name: ordinal(name) for name in names}
    layer, layers = -1, {}
    for key in sorted(set(ordinals.values())):
        if layer < 0 or key[-1] != MATCH_PREVIOUS:
            layer += 1
        layers[key] = layer
    return {name: layers[key] for name, key in ordinals.items()}


def layer_decay_scales(params: Any, family: str, decay: float, backbone: tuple[str, ...] = ()) -> Any:
    """Each parameter's learning-rate scale under layer-wise decay: `decay ** (last - layer)`, so
    the head learns at the full rate and each layer below at `decay` times the one above
    (timm's `--layer-decay`, BEiT's and MAE's fine-tuning recipe). Layers are counted inside
    the `backbone` subtree (a path of param-tree keys; () for a classifier, whose params are its
    backbone's, head included); every parameter outside it is head, in the last layer."""
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    paths = [tuple(str(getattr(p, "key", p)) for p in path) for path, _ in flat]
    inside = [path[:len(backbone)] == tuple(backbone) for path in paths]
    if not any(inside):  # a task naming the wrong subtree would otherwise turn the decay off silently
        raise ValueError(f"layer decay: no parameter under the backbone path {'/'.join(backbone)!r}")
    names = {i: canonical_key(path[len(backbone):]) for i, path in enumerate(paths) if inside[i]}
    ids = layer_ids(list(names.values()), family)
    last = max(ids.values()) + (0 if all(inside) else 1)  # outside the backbone: one layer above it
    return tree.unflatten([decay ** (last - ids[names[i]]) if inside[i] else 1.0 for i in range(len(paths))])


def scale_per_parameter(scales: Any) -> optax.GradientTransformation:
    """Multiply each parameter's update by its scale (a pytree of floats shaped like the params)."""
    return optax.stateless(lambda updates, params=None: jax.tree.map(lambda u, s: u * s, updates, scales))


def lr_schedule(lr: float, warmup_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from warmup_lr to lr, then cosine to min_lr, per optimizer step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_lr, peak_value=lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=min_lr)


def make_optimizer(schedule: optax.Schedule, weight_decay: float, clip_grad: float,
                   accum_steps: int = 1, lr_scales: Optional[Any] = None) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(0.9, 0.999, eps 1e-8 outside the root, as torch.optim.AdamW)
    -> per-parameter learning-rate scales (`layer_decay_scales`; AdamW's decoupled weight decay
    is scaled with the rate, as in a torch param group), wrapped in MultiSteps when gradients
    are accumulated over several batches."""
    parts = [optax.clip_by_global_norm(clip_grad)] if clip_grad > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask))
    if lr_scales is not None:
        parts.append(scale_per_parameter(lr_scales))
    tx = optax.chain(*parts)
    return optax.MultiSteps(tx, every_k_schedule=accum_steps) if accum_steps > 1 else tx
