"""Pretrained weights: timm's tags (`architecture.tag`), where they live on the Hugging Face Hub, what
they classify and how images are prepared for them.

The tags are data, in `pretrained_tags.tsv` beside this module (read at import): one row per tag,
with its class count, its normalisation (`imagenet`, `inception` or `openai_clip`), its crop_pct,
its license and, where timm keeps the weights under another name, their Hub repository. Here:
`DataConfig`, `PretrainedConfig`, the normalisation constants, `LABEL_SETS`, `PRETRAINED`,
`DEFAULT_TAGS`, `DATA_CONFIGS` and the lookups `split_model_name`, `get_pretrained_config`,
`list_pretrained`, `get_data_config`.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

from swin_jax.arguments import InputError
from swin_jax.configs.registry import MODEL_CONFIGS, get_config

IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Google's ViT weights: pixels in [-1, 1]
OPENAI_CLIP = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = IMAGENET
INCEPTION_MEAN, INCEPTION_STD = INCEPTION


@dataclass(frozen=True)
class DataConfig:
    """How images are prepared for a model: the evaluation transform resizes the shorter side to
    `size / crop_pct` with `interpolation`, center-crops `size` and normalises with mean / std."""

    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


# The class-name set of a classifier, from its class count (as timm infers it).
LABEL_SETS = {1000: "imagenet-1k", 11821: "imagenet-12k", 21841: "imagenet-22k", 21843: "imagenet-21k-goog"}


@dataclass(frozen=True)
class PretrainedConfig:
    """One set of pretrained weights, named as timm names them (`architecture.tag`): the Hub
    repository holding them, what they classify and how images are prepared for them."""

    name: str  # "swin_tiny_patch4_window7_224.ms_in1k"
    num_classes: int  # 0: a feature extractor, no classifier
    data: DataConfig
    license: Optional[str] = None
    repo: Optional[str] = None  # where timm keeps them under another name (the same weights); None: their own

    @property
    def architecture(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def hf_hub_id(self) -> str:
        """The Hub repository: timm publishes a tag as `timm/<architecture>.<tag>`, or shares another
        architecture's repository (CLIP's QuickGELU variants read the plain CLIP weights)."""
        return self.repo or f"timm/{self.name}"

    @property
    def labels(self) -> Optional[str]:
        """The class-name set (`swin_jax.labels`), None when the classes have no shipped names."""
        return LABEL_SETS.get(self.num_classes)



# The `normalisation` column of the tags table: (mean, std) by name.
NORMALISATIONS = {"imagenet": IMAGENET, "inception": INCEPTION, "openai_clip": OPENAI_CLIP}


def _read_tags() -> list[tuple[str, int, tuple, float, Optional[str], Optional[str]]]:
    """The rows of `pretrained_tags.tsv`, shipped beside this module: tab-separated with a header
    row (name, num_classes, normalisation, crop_pct, license, repo; an empty license or repo is
    None); lines starting with `#` are comments."""
    text = resources.files("swin_jax.configs").joinpath("pretrained_tags.tsv").read_text(encoding="utf-8")
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return [(row["name"], int(row["num_classes"]), NORMALISATIONS[row["normalisation"]], float(row["crop_pct"]),
             row["license"] or None, row["repo"] or None)
            for row in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)]


# (architecture.tag, classes, (mean, std), crop_pct, license, repo) in timm's order: an architecture's
# first tag is its default. Every one is evaluated with bicubic resizing and a center crop. `repo`:
# tags whose weights timm keeps in another architecture's repository.
_PRETRAINED = _read_tags()
PRETRAINED: dict[str, PretrainedConfig] = {
    name: PretrainedConfig(name, classes, DataConfig("bicubic", crop_pct, *norm), license, repo)
    # by architecture, as list_models sorts them (a stable sort: each one's tags stay in timm's order)
    for name, classes, norm, crop_pct, license, repo in sorted(_PRETRAINED, key=lambda row: row[0].split(".")[0])
}
DEFAULT_TAGS: dict[str, str] = {}  # architecture -> its default tag's full name
for _name in PRETRAINED:
    DEFAULT_TAGS.setdefault(_name.split(".")[0], _name)
# Image preparation of each architecture: its default weights', as timm's `resolve_data_config`
# gives it for a bare name.
DATA_CONFIGS: dict[str, DataConfig] = {name: PRETRAINED[DEFAULT_TAGS[name]].data for name in MODEL_CONFIGS}


def split_model_name(name: str) -> tuple[str, Optional[str]]:
    """`"arch.tag"` -> `("arch", "tag")`; a bare `"arch"` -> `("arch", None)`."""
    architecture, _, tag = name.partition(".")
    return architecture, tag or None


def get_pretrained_config(name: str) -> PretrainedConfig:
    """The pretrained weights `name` names: `architecture.tag`, or a bare architecture for its
    default tag (timm's). Unknown names raise a ValueError listing the tags there are."""
    architecture, tag = split_model_name(name)
    get_config(architecture)  # unknown architectures fail with the usual message
    full = DEFAULT_TAGS.get(architecture) if tag is None else name
    if full not in PRETRAINED:
        known = ", ".join(list_pretrained(architecture + ".*")) or "none"
        raise InputError(f"no pretrained weights {name!r}; {architecture} has: {known}")
    return PRETRAINED[full]


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names (`architecture.tag`) of the pretrained weights matching a shell-style `pattern`,
    each architecture's in timm's order (its default first)."""
    return [name for name in PRETRAINED if fnmatch.fnmatch(name, pattern)]


def get_data_config(name: str, **overrides: Any) -> DataConfig:
    """The image preparation of model `name` (timm's for its default weights) or of pretrained
    weights `architecture.tag`, with overrides (`crop_pct`, `interpolation`, `mean`, `std`;
    None values are ignored)."""
    if "." in name:
        base = get_pretrained_config(name).data
    else:
        get_config(name)  # unknown names fail with the usual message
        base = DATA_CONFIGS[name]
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **given)

