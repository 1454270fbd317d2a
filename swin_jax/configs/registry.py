"""The registry of named models: every family's table of named configs in one `MODEL_CONFIGS`, the
Flax module that builds each config type (`FLAX_MODULES`), and the lookups `get_config` and
`list_models`.

A new model family is its config file here (its config class and a `MODELS` table), its Flax
module, and one entry in `_FAMILIES`. The modules are named as "module:attribute" strings, imported
by `swin_jax.models` when it builds a model, so the registry needs no jax.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Union

from swin_jax.arguments import InputError, UnknownOptionError
import swin_jax.configs.swin as swin
import swin_jax.configs.vit as vit
from swin_jax.configs.swin import SwinConfig, SwinV2Config
from swin_jax.configs.vit import VitConfig

# One entry per family: its named models (name -> (config class, arguments); timm's names and
# values) and, per config class, the Flax module that builds it. Listed in the order
# `MODEL_CONFIGS` keeps: Swin V1, Swin V2, then the ViT family.
_FAMILIES: tuple[tuple[dict[str, tuple[type, dict[str, Any]]], dict[type, str]], ...] = (
    (swin.MODELS, {SwinConfig: "swin_jax.swin:SwinTransformer", SwinV2Config: "swin_jax.swin_v2:SwinTransformerV2"}),
    (vit.MODELS, {VitConfig: "swin_jax.vit:VisionTransformer"}),
)

# name -> (config class, arguments). timm's names and values.
MODEL_CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
    name: entry for models, _ in _FAMILIES for name, entry in models.items()}
# config class -> "module:attribute" of the Flax module built from it
FLAX_MODULES: dict[type, str] = {config_cls: path for _, modules in _FAMILIES for config_cls, path in modules.items()}
# family name ("swin", "swinv2", "vit") -> its config class
CONFIG_TYPES: dict[str, type] = {config_cls.family: config_cls for config_cls in FLAX_MODULES}


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered model configs matching a shell-style `pattern`, sorted."""
    return sorted(name for name in MODEL_CONFIGS if fnmatch.fnmatch(name, pattern))


def get_config(name: str, **overrides: Any) -> Union[SwinConfig, SwinV2Config, VitConfig]:
    """The config registered as `name`, with `overrides` applied (unknown keys are an error)."""
    if name not in MODEL_CONFIGS:
        close = [n for n in MODEL_CONFIGS if name.split("_")[0] in n]
        hint = f"; known: {', '.join(close or list_models())}"
        raise InputError(f"unknown model {name!r}{hint}")
    config_cls, args = MODEL_CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UnknownOptionError(f"{name} has no option(s) {unknown}; options are {sorted(fields)}")
    annotations = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}
    for key, value in overrides.items():  # a wrong kind of value fails here, not deep in the model
        kind = OPTION_KINDS.get(annotations[key])
        if kind is not None and not (isinstance(value, kind[0]) and (kind[0] == (bool,) or not isinstance(value, bool))):
            raise InputError(f"{name}: option {key}={value!r} wants {kind[1]}")
    if not overrides:
        return config_cls(**args)  # a registered config is good: an error here is a bug
    try:
        return config_cls(**{**args, **overrides})
    except InputError:
        raise
    except (ValueError, TypeError, ZeroDivisionError) as err:  # the overrides make no model
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise InputError(f"{name} with {given} is no valid config ({type(err).__name__}: {err})") from None


# The values a config field of a plain annotated type takes: (types, words).
OPTION_KINDS = {"int": ((int,), "a whole number"), "float": ((int, float), "a number"),
                "bool": ((bool,), "True or False"), "str": ((str,), "a string")}
