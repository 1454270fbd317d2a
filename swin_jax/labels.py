"""Class names of the label sets pretrained classifiers predict, shipped with the package.

Each set is a gzipped table in `swin_jax/data/`, one class per line in index order: its WordNet
synset id and its description (the synset's lemmas, as timm's `ImageNetInfo` gives them):

- `imagenet-1k`: the 1000 ILSVRC-2012 classes;
- `imagenet-12k`: the 11821 classes of timm's ImageNet-12k subset (CLIP `*_ft_in12k` classifiers);
- `imagenet-22k`: the 21841 classes of Microsoft's ImageNet-22k classifiers (Swin `ms_in22k`);
- `imagenet-21k-goog`: the 21843 classes of Google's ImageNet-21k classifiers (ViT `augreg_in21k`).

Which set a classifier predicts follows from its class count (`swin_jax.configs.LABEL_SETS`).
This module needs neither jax nor torch.
"""
from __future__ import annotations

import functools
import gzip
from importlib import resources

from swin_jax.configs import LABEL_SETS
from swin_jax.arguments import InputError


@functools.lru_cache(maxsize=None)
def _table(label_set: str) -> tuple[tuple[str, str], ...]:
    if label_set not in LABEL_SETS.values():
        raise InputError(f"unknown label set {label_set!r}; known: {', '.join(LABEL_SETS.values())}")
    data = resources.files("swin_jax").joinpath("data", f"{label_set}.tsv.gz").read_bytes()
    rows = gzip.decompress(data).decode("utf-8").splitlines()
    return tuple(tuple(row.split("\t", 1)) for row in rows)


def class_names(label_set: str) -> list[str]:
    """The class descriptions of `label_set`, in index order (e.g. 'tench, Tinca tinca')."""
    return [name for _, name in _table(label_set)]


def synsets(label_set: str) -> list[str]:
    """The WordNet synset ids of `label_set`, in index order (e.g. 'n01440764')."""
    return [synset for synset, _ in _table(label_set)]
