"""The optimizer of the Swin recipe in optax: AdamW with a weight-decay mask, linear warm-up then
cosine, global-norm clipping, optional gradient accumulation."""
from __future__ import annotations

from typing import Any

import jax
import optax

# Never decayed (the Swin / timm recipe), besides every 1-D parameter (norms, biases): these
# parameters, and everything inside Swin V2's position-bias MLP (timm's `no_weight_decay`).
NO_DECAY_NAMES = ("bias", "relative_position_bias_table", "pos_embed", "cls_token", "logit_scale")
NO_DECAY_MODULE_PREFIXES = ("cpb_mlp",)


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: matrices and kernels, not 1-D params, biases, bias
    tables, position embeddings, class tokens, Swin V2's logit scales and position-bias MLPs.
    (optax's `mask` marks what *is* decayed.)"""

    def decayed(path: tuple, leaf: Any) -> bool:
        names = [str(getattr(p, "key", p)) for p in path]
        if any(n.startswith(NO_DECAY_MODULE_PREFIXES) for n in names[:-1]):
            return False
        return leaf.ndim > 1 and names[-1] not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decayed, params)


def lr_schedule(lr: float, warmup_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from warmup_lr to lr, then cosine to min_lr, per optimizer step."""
    return optax.warmup_cosine_decay_schedule(
        init_value=warmup_lr, peak_value=lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=min_lr)


def make_optimizer(schedule: optax.Schedule, weight_decay: float, clip_grad: float,
                   accum_steps: int = 1) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(0.9, 0.999, eps 1e-8 outside the root, as torch.optim.AdamW),
    wrapped in MultiSteps when gradients are accumulated over several batches."""
    parts = [optax.clip_by_global_norm(clip_grad)] if clip_grad > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask))
    tx = optax.chain(*parts)
    return optax.MultiSteps(tx, every_k_schedule=accum_steps) if accum_steps > 1 else tx
