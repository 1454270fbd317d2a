"""How an image is prepared for a model at evaluation, as timm does it: resize by `crop_pct`,
center crop, normalise (timm's `transforms_imagenet_eval` + ToTensor + Normalize, on PIL).
`swin_jax.predict` and the trainer's evaluation both use it; the training augmentations live
in `train.transforms`."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from swin_jax.arguments import InputError

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

Resampling = Image.Resampling
# timm's interpolation names -> PIL's filters
PIL_INTERPOLATIONS = {
    "nearest": Resampling.NEAREST,
    "bilinear": Resampling.BILINEAR,
    "bicubic": Resampling.BICUBIC,
    "box": Resampling.BOX,
    "hamming": Resampling.HAMMING,
    "lanczos": Resampling.LANCZOS,
}


def pil_interpolation(name: str) -> int:
    """timm's ``str_to_pil_interp``: "nearest" | "bilinear" | "bicubic" | "box" | "hamming" | "lanczos"."""
    try:
        return PIL_INTERPOLATIONS[name]
    except KeyError:
        raise InputError(f"unknown interpolation {name!r}; expected one of {sorted(PIL_INTERPOLATIONS)}") from None


def resize(img: Image.Image, size: Sequence[int], interpolation: str) -> Image.Image:
    """torchvision ``F.resize`` on PIL with an explicit (h, w): a no-op when the size already matches."""
    h, w = int(size[0]), int(size[1])
    if (img.height, img.width) == (h, w):
        return img
    return img.resize((w, h), pil_interpolation(interpolation))


def center_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision ``F.center_crop`` on PIL: zero-pad when smaller, round the offsets."""
    crop_h, crop_w = size
    img_w, img_h = img.size
    if crop_w > img_w or crop_h > img_h:
        border = (
            (crop_w - img_w) // 2 if crop_w > img_w else 0,
            (crop_h - img_h) // 2 if crop_h > img_h else 0,
            (crop_w - img_w + 1) // 2 if crop_w > img_w else 0,
            (crop_h - img_h + 1) // 2 if crop_h > img_h else 0,
        )
        img = ImageOps.expand(img, border=border, fill=(0,) * len(img.getbands()))
        img_w, img_h = img.size
        if (crop_w, crop_h) == (img_w, img_h):
            return img
    top = int(round((img_h - crop_h) / 2.0))
    left = int(round((img_w - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def eval_transform(img: Image.Image, size: tuple[int, int], crop_pct: float, interpolation: str) -> np.ndarray:
    """timm ``transforms_imagenet_eval`` (crop_mode "center") up to ``ToTensor``: uint8 HWC.

    ``scale_size = floor(side / crop_pct)`` per side; when both are equal the shorter image side
    is resized to it keeping the aspect (torchvision ``Resize(int)``, long side truncated),
    otherwise timm's ``ResizeKeepRatio(scale_size)`` (both sides divided by the smaller
    side ratio, Python-rounded); then torchvision ``CenterCrop(size)``.
    """
    crop_pct = crop_pct or 0.875  # timm's DEFAULT_CROP_PCT when None/0
    size = (int(size[0]), int(size[1]))
    scale_h, scale_w = (math.floor(x / crop_pct) for x in size)
    img_w, img_h = img.size
    if scale_h == scale_w:
        short, long = (img_w, img_h) if img_w <= img_h else (img_h, img_w)
        new_short, new_long = scale_h, int(scale_h * long / short)
        new_w, new_h = (new_short, new_long) if img_w <= img_h else (new_long, new_short)
        target = (new_h, new_w)
    else:
        ratio = min(img_h / scale_h, img_w / scale_w)
        target = (round(img_h / ratio), round(img_w / ratio))
    img = resize(img, target, interpolation)
    return np.asarray(center_crop(img, size), dtype=np.uint8)


def normalize(image_uint8_hwc: np.ndarray, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
              std: Sequence[float] = IMAGENET_DEFAULT_STD) -> np.ndarray:
    """``ToTensor`` + ``Normalize`` in float32, in the same operation order: (x / 255 - mean) / std."""
    x = np.asarray(image_uint8_hwc).astype(np.float32) / np.float32(255)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
