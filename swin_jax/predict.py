"""Classify images with pretrained weights: timm's evaluation transform, the model, the top classes.

    from swin_jax.predict import predict
    for p in predict(["cat.jpg"], "swin_tiny_patch4_window7_224.ms_in1k"):
        print(p.image, p.top[0].name, p.top[0].probability)

Images are prepared exactly as timm prepares them for those weights: the shorter side resized to
`size / crop_pct` with the weights' interpolation, a center crop, ToTensor and Normalize with
their mean and std. Needs Pillow (`pip install swin-jax[train]`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from swin_jax.arguments import InputError, MissingInputError, MissingExtraError


@dataclass(frozen=True)
class ClassScore:
    index: int
    probability: float
    synset: Optional[str] = None  # WordNet id, for ImageNet label sets
    name: Optional[str] = None


@dataclass(frozen=True)
class Prediction:
    image: str
    top: tuple[ClassScore, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "top": [vars(c) for c in self.top]}


def read_rgb(path: str | Path) -> Any:
    """The image at `path` as an RGB PIL image; an unreadable file raises a ValueError naming it."""
    try:
        from PIL import Image
    except ImportError as err:  # pillow comes with the train extra
        raise MissingExtraError("predict needs Pillow: pip install 'swin-jax[train]'") from err
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise MissingInputError(f"image not found: {path}") from None
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... on bad files
        raise InputError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def prepare(img: Any, size: tuple[int, int], data: Any) -> np.ndarray:
    """timm's evaluation transform of one PIL image for `data` (a `DataConfig`): float32 HWC."""
    from swin_jax.preprocess import eval_transform, normalize

    return normalize(eval_transform(img, size, data.crop_pct, data.interpolation), data.mean, data.std)


def predict(images: Sequence[str | Path], name: str, top: int = 5, batch: int = 16,
            cache_dir: Optional[str | Path] = None, progress: bool = False, use_ema: bool = False) -> list[Prediction]:
    """The `top` classes of each image, with probabilities (softmax of the logits) and, for
    ImageNet classifiers, the class names. `name` is pretrained weights' name as in
    `swin_jax.load_pretrained`; every image is read before the model is loaded, so an
    unreadable one fails first. `use_ema`: a training checkpoint's EMA weights."""
    import jax
    import jax.numpy as jnp

    from swin_jax.pretrained import load_pretrained, resolve_pretrained
    from swin_jax.labels import class_names, synsets

    pictures = [read_rgb(path) for path in images]
    resolved = resolve_pretrained(name, cache_dir, use_ema=use_ema)
    if resolved.num_classes <= 0:
        raise InputError(f"{name} has no classifier (a feature extractor): nothing to predict")
    model, params = load_pretrained(name, cache_dir=cache_dir, progress=progress, use_ema=use_ema)
    inputs = np.stack([prepare(img, model.config.img_size, resolved.data) for img in pictures])
    forward = jax.jit(lambda p, x: jax.nn.softmax(model.apply({"params": p}, x).astype(jnp.float32), axis=-1))
    with jax.default_matmul_precision("highest"):
        probs = np.concatenate([np.asarray(forward(params, inputs[i:i + batch]))
                                for i in range(0, len(inputs), batch)])
    names = class_names(resolved.labels) if resolved.labels else None
    ids = synsets(resolved.labels) if resolved.labels else None
    out = []
    for path, p in zip(images, probs):
        order = np.argsort(-p, kind="stable")[:top]
        out.append(Prediction(str(path), tuple(
            ClassScore(int(i), float(p[i]), ids[i] if ids else None, names[i] if names else None) for i in order)))
    return out
