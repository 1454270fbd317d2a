"""Pretrained weights in one call, from the Hugging Face Hub.

    model, params = swin_jax.load_pretrained("swin_tiny_patch4_window7_224.ms_in1k")
    logits = model.apply({"params": params}, images_nhwc)

Names are those of `swin_jax.hub`: timm's `architecture.tag`, a bare architecture, or
`hf-hub:ORG/REPO[/FILE][@REVISION]` for any Hub repository that holds a timm-, transformers- or
torchvision-layout checkpoint. The converted params are kept as a Flax msgpack file under
`SWIN_JAX_CACHE` (default `~/.cache/swin_jax`), keyed by the source file and the model config,
so a second load reads them back instead of converting again, and a changed source file is
converted anew. A file in the Hugging Face cache is used as it is, without asking the Hub for a
newer version: `hf download REPO` refreshes the cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from swin_jax.configs import LABEL_SETS, MODEL_CONFIGS, DataConfig, get_data_config, split_model_name
from swin_jax.hub import HUB_PREFIX, optional_json, parse_hub_name, weights_file
from swin_jax.arguments import InputError

class CacheWarning(UserWarning):
    """The conversion cache cannot be written: weights load without it."""


CONVERTED_FORMAT = 2  # bump when the params a checkpoint converts to change

@dataclass(frozen=True)
class ResolvedWeights:
    """Pretrained weights, found: their file and the model and image preparation they need."""

    name: str
    repo_id: str  # the Hub repository
    path: Path  # the checkpoint file in the Hugging Face cache
    architecture: str  # the registered model they load into
    num_classes: int
    data: DataConfig
    model_args: dict = dataclasses.field(default_factory=dict)  # config overrides the weights were made with

    @property
    def labels(self) -> Optional[str]:
        """The class-name set (`swin_jax.labels`), None when the classes have no shipped names."""
        return LABEL_SETS.get(self.num_classes)


def _timm_data_config(architecture: str, pretrained_cfg: dict) -> DataConfig:
    keys = ("interpolation", "crop_pct", "mean", "std")
    return get_data_config(architecture, **{k: pretrained_cfg.get(k) for k in keys})


def _read_weights(path: Path, repo: str, use_ema: bool = False) -> tuple[dict, str]:
    """The checkpoint's tensors and layout; a damaged file says which cached file to fetch again."""
    from swin_jax.checkpoint_io import read_checkpoint

    try:
        read = read_checkpoint(path, use_ema=use_ema)
        return read.state_dict, read.layout
    except ValueError as err:
        if "truncated or corrupted" not in str(err):
            raise
        parts = Path(path).parts  # .../snapshots/<commit>/<file in the repository>
        in_repo = "/".join(parts[parts.index("snapshots") + 2:]) if "snapshots" in parts else Path(path).name
        raise InputError(f"{err}. It is the Hugging Face cache's copy of {repo}/{in_repo}: fetch it again with "
                         f"`hf download {repo} {in_repo} --force-download`") from None


def resolve_pretrained(name: str, cache_dir: Optional[str | Path] = None,
                       architecture: Optional[str] = None, use_ema: bool = False) -> ResolvedWeights:
    """Find pretrained weights (fetching them into the cache if needed) and what they are.

    For timm's names everything comes from the registry. For `hf-hub:` repositories the model is
    `architecture` if given, else the repository's timm `config.json` (`architecture`,
    `num_classes`, `pretrained_cfg`), else the registered model the checkpoint's tensors fit
    (`swin_jax.checkpoint_info.describe`), with that model's default image preparation."""
    weights = parse_hub_name(name)
    if weights is None:
        raise InputError(f"{name!r} names no pretrained weights: use architecture.tag (swin_jax.list_pretrained()) "
                         f"or {HUB_PREFIX}ORG/REPO")
    path = weights_file(weights, cache_dir)
    if weights.pretrained is not None:
        p = weights.pretrained
        return ResolvedWeights(p.name, weights.repo_id, path, p.architecture, p.num_classes, p.data)  # a bare name: its full tag
    config = optional_json(weights, "config.json", cache_dir) or {}
    if "architecture" in config and architecture in (None, config["architecture"]):  # a timm repository
        found = config["architecture"]
        if found not in MODEL_CONFIGS:
            raise InputError(f"{weights.repo_id} holds a {found}, which swin_jax does not have")
        fields = {f.name for f in dataclasses.fields(MODEL_CONFIGS[found][0])}
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in config.get("model_args", {}).items() if k in fields}
        return ResolvedWeights(name, weights.repo_id, path, found, int(config.get("num_classes", 1000)),
                               _timm_data_config(found, config.get("pretrained_cfg", {})), args)
    from swin_jax.checkpoint_info import describe
    from swin_jax.convert import infer_num_classes

    state, layout = _read_weights(path, weights.repo_id, use_ema)
    info = describe(state, layout)
    if architecture is None:
        if not info.matches:
            raise InputError(f"{weights.repo_id}: its {info.family} checkpoint ({info.config}) fits no registered "
                             f"model; pass the architecture to build")
        architecture = info.matches[0]
    config_cls = MODEL_CONFIGS[split_model_name(architecture)[0]][0]
    return ResolvedWeights(name, weights.repo_id, path, architecture, infer_num_classes(state, config_cls, layout),
                           get_data_config(architecture))


# ----- load, converting once


def converted_cache_dir() -> Path:
    """Where converted params are kept: `$SWIN_JAX_CACHE`, else `$XDG_CACHE_HOME/swin_jax`,
    else `~/.cache/swin_jax`."""
    if os.environ.get("SWIN_JAX_CACHE"):
        return Path(os.environ["SWIN_JAX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swin_jax"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=repr).encode()).hexdigest()[:16]


def converted_path(resolved: ResolvedWeights, config: Any, use_ema: bool = False) -> Path:
    """The cached params file for `resolved` loaded into a model of `config`. The name changes
    with the source file (its resolved path, size and modification time: the Hub cache keeps
    each version under its content hash), with the weight set asked for (EMA or not: the wrapper
    prefix stripped, if any, follows from the file) and with the config."""
    real = os.path.realpath(resolved.path)
    stat = os.stat(real)
    source = _digest([real, stat.st_size, stat.st_mtime_ns, CONVERTED_FORMAT])
    folder = resolved.name.replace(HUB_PREFIX, "hf-hub--").replace("/", "--").replace("@", "--")
    # how the ops compute (kernels, remat) does not change the params
    weights_config = dataclasses.replace(config, kernels=type(config.kernels)(), remat="none")
    weights = _digest([repr(weights_config), "ema" if use_ema else "model"])  # stale files are those of other sources
    return converted_cache_dir() / folder / f"{weights}-{source}.msgpack"


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)


def load_pretrained(name: str, *, dtype: Any = None, cache_dir: Optional[str | Path] = None,
                    architecture: Optional[str] = None, seed: int = 0, progress: bool = True,
                    use_ema: bool = False, **overrides: Any) -> tuple[Any, dict]:
    """Build a model and load pretrained weights into it: `(model, params)`.

    `name`: `architecture.tag` (timm's names, `swin_jax.list_pretrained()`), a bare architecture
    (its default tag) or `hf-hub:ORG/REPO[/FILE][@REVISION]`. `overrides` change the model as in
    `create_model`: `img_size` / `window_size` resize position embeddings and bias tables as
    timm does; a `num_classes` other than the weights' gets a new classifier, drawn with `seed`
    (0 for none). `dtype` is the compute dtype (default float32). `cache_dir` is the Hugging
    Face cache to use (default: huggingface_hub's). The converted params are cached (see
    `converted_path`), so the second call only reads them. `use_ema` reads a training
    checkpoint's EMA weights (`state_dict_ema` / `model_ema`) instead of its model weights."""
    import jax
    import jax.numpy as jnp

    from swin_jax.checkpoint_io import read_params, write_params
    from swin_jax.convert import from_torch
    from swin_jax.models import create_model, fit_head

    resolved = resolve_pretrained(name, cache_dir, architecture, use_ema)
    num_classes = overrides.pop("num_classes", resolved.num_classes)
    source = create_model(resolved.architecture, dtype=dtype or jnp.float32,
                          **{**resolved.model_args, **overrides, "num_classes": resolved.num_classes})
    cached = converted_path(resolved, source.config, use_ema)
    params = None
    if cached.is_file():
        try:
            params = jax.tree.map(jnp.asarray, read_params(cached))
            _say(progress, f"{name}: converted params from {cached}")
        except ValueError as err:
            _say(progress, f"{name}: {err}; converting again")
    if params is None:
        state, layout = _read_weights(resolved.path, resolved.repo_id, use_ema)
        _say(progress, f"{name}: converting {resolved.path} ({layout} layout) for {resolved.architecture}")
        params = from_torch(source, state, layout, progress=progress)
        try:
            write_params(params, cached)
            for stale in cached.parent.glob(cached.name.split("-")[0] + "-*.msgpack"):  # older sources' conversions
                if stale != cached:
                    stale.unlink(missing_ok=True)
        except OSError as err:  # it is only a cache: the weights are loaded all the same
            warnings.warn(f"cannot keep the converted weights in {converted_cache_dir()} "
                          f"({err.strerror or type(err).__name__}); going on without the cache (SWIN_JAX_CACHE)",
                          CacheWarning, stacklevel=2)
    if num_classes == resolved.num_classes:
        return source, params
    model = source.clone(config=dataclasses.replace(source.config, num_classes=num_classes))
    return model, fit_head(model, params, seed)
