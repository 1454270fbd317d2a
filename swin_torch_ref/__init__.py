"""swin_torch_ref: our own small PyTorch reference models, state_dict keys identical to timm's.

Reads its configs from `swin_jax.configs` (pure Python); never imports jax.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from swin_jax.configs import SwinConfig, SwinV2Config, VitConfig, get_config, list_models
from swin_torch_ref.swin import SwinTransformer
from swin_torch_ref.swin_v2 import SwinTransformerV2
from swin_torch_ref.vit import VisionTransformer

MODEL_CLASSES: dict[type, type[nn.Module]] = {SwinConfig: SwinTransformer, SwinV2Config: SwinTransformerV2,
                                              VitConfig: VisionTransformer}

__all__ = ["create_model", "list_models", "randomize_parameters"]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model `name` in PyTorch, in eval mode; overrides as in swin_jax."""
    config = get_config(name, **overrides)
    return MODEL_CLASSES[type(config)](config).eval()


@torch.no_grad()
def randomize_parameters(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter of any torch model at O(1) scale, in place (for parity checks).

    Default inits (std 0.02, unit norms, zero biases) are so small that a wrong index or a swapped
    concat order can hide under 1e-5. Here every matrix (Linear, Conv) gets std 1/sqrt(fan_in),
    so each layer's output is O(1); every other tensor (biases, norm weights, relative position
    bias tables, position embeddings, class tokens) is drawn at O(1) directly: norm weights
    1 + N(0, 0.5), Swin V2's logit scales U(0, 2 log 100) (half of them above the clamp at
    log 100), everything else N(0, 1). Deterministic for a given `seed` and parameter order.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_matrix = param.ndim >= 2 and leaf in ("weight", "in_proj_weight")
        if is_matrix:
            fan_in = math.prod(param.shape[1:])
            values = torch.randn(param.shape, generator=gen) / math.sqrt(fan_in)
        elif param.ndim == 1 and leaf == "weight":  # a norm's scale
            values = 1.0 + 0.5 * torch.randn(param.shape, generator=gen)
        elif leaf == "logit_scale":  # Swin V2: on both sides of the clamp at log(100), about half above
            values = 2 * math.log(100.0) * torch.rand(param.shape, generator=gen)
        else:
            values = torch.randn(param.shape, generator=gen)
        param.copy_(values.to(param.dtype))
    return model
