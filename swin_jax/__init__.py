"""swin-jax: Swin Transformer and ViT in JAX/Flax, numerically identical to the PyTorch models.

    import swin_jax
    model = swin_jax.create_model("swin_tiny_patch4_window7_224", num_classes=10)
    params = swin_jax.init_params(model)
    logits = model.apply({"params": params}, images_nhwc)

    model, params = swin_jax.load_pretrained("swin_tiny_patch4_window7_224.ms_in1k")  # from the HF Hub

Submodules load lazily: `import swin_jax.configs` needs neither jax nor torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from swin_jax.configs import Kernels, get_config, get_data_config, get_pretrained_config, list_models, list_pretrained

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first use)
_LAZY = {
    "create_model": "swin_jax.models",
    "init_params": "swin_jax.models",
    "fit_head": "swin_jax.models",
    "load_pretrained": "swin_jax.pretrained",
    "resolve_pretrained": "swin_jax.pretrained",
    "class_names": "swin_jax.labels",
    "param_shapes": "swin_jax.models",
    "from_torch": "swin_jax.convert",
    "to_torch": "swin_jax.convert",
    "CheckpointMismatchError": "swin_jax.convert",
    "CheckpointFamilyError": "swin_jax.convert",
    "detect_layout": "swin_jax.layouts",
    "detect_family": "swin_jax.layouts",
    "LAYOUTS": "swin_jax.layouts",
    "load_checkpoint": "swin_jax.checkpoint_io",
    "read_checkpoint": "swin_jax.checkpoint_io",
    "save_checkpoint": "swin_jax.checkpoint_io",
    "resample_pos_embed": "swin_jax.resample",
    "check_parity": "swin_jax.parity",
    "compiler_options": "swin_jax.compiler",
    "trim_host_memory": "swin_jax.compiler",
}

__all__ = ["Kernels", "get_config", "get_data_config", "get_pretrained_config", "list_models", "list_pretrained",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swin_jax' has no attribute {name!r}")
