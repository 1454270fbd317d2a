"""Model registry: a name and overrides in, a Flax linen module out."""
from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from swin_jax.configs import FLAX_MODULES, get_config


def module_class(config: Any) -> type[nn.Module]:
    """The Flax module class that builds a model of `config`, as the config registry names it
    (`swin_jax.configs.FLAX_MODULES`, "module:attribute"), imported on first use."""
    module, _, attribute = FLAX_MODULES[type(config)].partition(":")
    return getattr(importlib.import_module(module), attribute)


def create_model(name: str, dtype: Any = jnp.float32, **overrides: Any) -> nn.Module:
    """Build the registered model `name` (timm's names) as a Flax module.

    `dtype` is the compute dtype (e.g. `jnp.bfloat16`); parameters stay float32. Other keyword
    arguments override the named config (`num_classes`, `img_size`, `window_size`, ...).
    """
    config = get_config(name, **overrides)
    return module_class(config)(config, dtype=dtype)


def dummy_input(model: nn.Module, batch: int = 1) -> jax.ShapeDtypeStruct:
    """The shape/dtype of an input batch the model accepts, for `init` or `jax.eval_shape`."""
    cfg = model.config
    return jax.ShapeDtypeStruct((batch, *cfg.img_size, cfg.in_chans), jnp.float32)


def init_params(model: nn.Module, key: jax.Array | int = 0) -> Any:
    """Freshly initialised float32 parameters of `model` (the `params` collection)."""
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    x = jnp.zeros(dummy_input(model).shape, jnp.float32)
    return jax.jit(model.init)(key, x)["params"]


def param_shapes(model: nn.Module) -> Any:
    """The params pytree of `model` as `jax.ShapeDtypeStruct` leaves, computed without allocating."""
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy_input(model))["params"]


# The classifier layers (DeiT's distilled models have two)
CLASSIFIERS = ("head", "head_dist")


def fit_head(model: nn.Module, params: Any, seed: int = 0) -> Any:
    """`params` loaded for another class count, fitted to `model`'s: the classifiers are dropped
    (`num_classes=0`) or replaced by freshly initialised ones (drawn with `seed`); every other
    parameter is kept. Only the heads are initialised, not the whole model."""
    params = {k: v for k, v in params.items() if k not in CLASSIFIERS}
    if model.config.num_classes <= 0:
        return params
    features = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method=model.forward_features),
                              param_shapes(model), dummy_input(model))
    fresh = model.init(jax.random.PRNGKey(seed), jnp.zeros(features.shape, jnp.float32), method=model.forward_head)
    return {**params, **{k: v for k, v in fresh["params"].items() if k in CLASSIFIERS}}
