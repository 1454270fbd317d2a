"""Named model configs, kept once as plain data.

This package imports neither jax nor torch: `swin_jax` (Flax) and `swin_torch_ref` (PyTorch) both
build their models from the configs here, and so does the stage/window geometry that decides
where Swin shifts and pads. Names and defaults follow timm's.

- `kernel_setting`: `Kernels`, which implementation computes each op;
- `fields`: the config fields every family shares (`to_pair`, `REMAT_CHOICES`, `ACTIVATIONS`);
- `swin`, `vit`: each family's config classes and its table of named models;
- `registry`: `MODEL_CONFIGS` from the families' tables, the Flax module of each config class,
  the config class of each family name, `get_config`, `list_models`;
- `pretrained_tags`: timm's pretrained tags (data in `pretrained_tags.tsv`) and how images are
  prepared for them.
"""
from __future__ import annotations

from swin_jax.configs.fields import ACTIVATIONS, REMAT_CHOICES, IntPair, to_pair
from swin_jax.configs.kernel_setting import KERNEL_CHOICES, Kernels, to_kernels
from swin_jax.configs.pretrained_tags import (DATA_CONFIGS, DEFAULT_TAGS, IMAGENET, IMAGENET_MEAN, IMAGENET_STD,
                                              INCEPTION, INCEPTION_MEAN, INCEPTION_STD, LABEL_SETS, OPENAI_CLIP,
                                              PRETRAINED, DataConfig, PretrainedConfig, get_data_config,
                                              get_pretrained_config, list_pretrained, split_model_name)
from swin_jax.configs.registry import CONFIG_TYPES, FLAX_MODULES, MODEL_CONFIGS, OPTION_KINDS, get_config, list_models
from swin_jax.configs.swin import SwinConfig, SwinV2Config
from swin_jax.configs.vit import VitConfig

__all__ = [
    "ACTIVATIONS", "CONFIG_TYPES", "DATA_CONFIGS", "DEFAULT_TAGS", "FLAX_MODULES", "IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD",
    "INCEPTION", "INCEPTION_MEAN", "INCEPTION_STD", "KERNEL_CHOICES", "LABEL_SETS", "MODEL_CONFIGS", "OPENAI_CLIP",
    "OPTION_KINDS", "PRETRAINED", "REMAT_CHOICES", "DataConfig", "IntPair", "Kernels", "PretrainedConfig",
    "SwinConfig", "SwinV2Config", "VitConfig", "get_config", "get_data_config", "get_pretrained_config",
    "list_models", "list_pretrained", "split_model_name", "to_kernels", "to_pair",
]
