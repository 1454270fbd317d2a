"""timm's ImageNet augmentations, op for op with Pillow, every random choice from a numpy Generator.

Mirrors (timm 1.0, torchvision 0.2x):

* ``timm.data.transforms.RandomResizedCropAndInterpolation`` (+ ``torchvision F.resized_crop``),
* ``torchvision.transforms.RandomHorizontalFlip`` and ``ColorJitter``,
* ``timm.data.auto_augment.rand_augment_transform`` (RandAugment, its ops and level functions),
* ``timm.data.random_erasing.RandomErasing`` (the box draw; the fill happens on device),
* ``timm.data.transforms_factory.transforms_imagenet_eval`` (crop_mode "center") and
  ``ToTensor`` + ``Normalize``,
* ``transforms_imagenet_train``'s order and hparams, as :class:`TrainTransform`.

The PIL calls and their arguments are the ones timm/torchvision make, so the pixels are equal.
Only the source of randomness differs: timm mixes Python's ``random``, ``numpy.random`` and
``torch``; here each draw comes from the ``numpy.random.Generator`` passed in, in the order timm
makes its draws, with the same distribution (``random.uniform(a, b)`` -> ``a + (b - a) * u``,
``random.randint(a, b)`` -> ``rng.integers(a, b + 1)``, ``random.gauss`` -> ``rng.normal``,
``random.choice(seq)`` -> ``seq[rng.integers(len(seq))]``, ``np.random.choice`` ->
``rng.integers`` / ``rng.choice``, ``torch.rand`` -> ``rng.random``, ``torch.randperm`` ->
``rng.permutation``). Seeding the generator from (seed, step, index) makes augmentation
reproducible and independent of the worker that runs it.

This module must stay importable without jax or torch: it runs in data-loader worker processes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from swin_jax.arguments import InputError
from swin_jax.preprocess import (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PIL_INTERPOLATIONS, center_crop,
                                 eval_transform, normalize, pil_interpolation, resize)

__all__ = [
    "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "pil_interpolation",
    "random_resized_crop_params", "resized_crop", "hflip",
    "color_jitter_params", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
    "color_jitter", "RAND_TRANSFORMS", "RAND_INCREASING_TRANSFORMS", "augment_op", "RandAugment",
    "erasing_box", "erasing_capacity", "erasing_noise", "place_erasing_noise", "apply_erasing", "center_crop", "eval_transform", "normalize", "TrainTransform",
]

# timm's `_RANDOM_INTERPOLATION`, in its order (the index drawn selects from this tuple).
_RANDOM_INTERPOLATION = ("bilinear", "bicubic")


def _uniform(rng: np.random.Generator, a: float, b: float) -> float:
    # Python's random.uniform is exactly `a + (b - a) * random()`; keep the formula (not
    # rng.uniform) so a scripted stream of u gives bit-identical values on both sides.
    return a + (b - a) * rng.random()


def _randint(rng: np.random.Generator, a: int, b: int) -> int:
    """Python's ``random.randint(a, b)``: inclusive of both ends."""
    return int(rng.integers(a, b + 1))


# --------------------------------------------------------------------------- random resized crop


def random_resized_crop_params(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                               rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm ``RandomResizedCropAndInterpolation.get_params``: (top, left, h, w) == timm's (i, j, h, w).

    Ten attempts of (area fraction uniform in ``scale``, log-uniform aspect in ``ratio``), accepted
    when the crop fits; otherwise the central crop clamped to the ratio range.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = _uniform(rng, *scale) * area
        aspect_ratio = math.exp(_uniform(rng, *log_ratio))
        target_w = int(round(math.sqrt(target_area * aspect_ratio)))
        target_h = int(round(math.sqrt(target_area / aspect_ratio)))
        if target_w <= width and target_h <= height:
            top = _randint(rng, 0, height - target_h)
            left = _randint(rng, 0, width - target_w)
            return top, left, target_h, target_w
    # Fallback to central crop (no further draws).
    in_ratio = width / height
    if in_ratio < min(ratio):
        target_w = width
        target_h = int(round(target_w / min(ratio)))
    elif in_ratio > max(ratio):
        target_h = height
        target_w = int(round(target_h * max(ratio)))
    else:
        target_w, target_h = width, height
    return (height - target_h) // 2, (width - target_w) // 2, target_h, target_w


def resized_crop(img: Image.Image, top: int, left: int, h: int, w: int, size: tuple[int, int],
                 interpolation: str) -> Image.Image:
    """torchvision ``F.resized_crop`` on PIL: crop the box, THEN resize it to ``size`` = (H, W).

    (Not ``img.resize(size, box=...)``: resampling from the uncropped image reads pixels outside
    the box near its border and gives different values.)
    """
    return resize(img.crop((left, top, left + w, top + h)), size, interpolation)


def hflip(img: Image.Image) -> Image.Image:
    """torchvision ``F.hflip`` on PIL."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


# --------------------------------------------------------------------------- colour jitter


def _check_jitter(value, name: str, center: float = 1.0, bound=(0.0, float("inf")),
                  clip_first_on_zero: bool = True) -> Optional[tuple[float, float]]:
    """torchvision ``ColorJitter._check_input``: a number v -> [center - v, center + v]; None when off."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        if value < 0:
            raise InputError(f"If {name} is a single number, it must be non negative.")
        value = [center - float(value), center + float(value)]
        if clip_first_on_zero:
            value[0] = max(value[0], 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        value = [float(value[0]), float(value[1])]
    else:
        raise TypeError(f"{name} should be a single number or a list/tuple with length 2.")
    if not bound[0] <= value[0] <= value[1] <= bound[1]:
        raise InputError(f"{name} values should be between {bound}, but got {value}.")
    if value[0] == value[1] == center:
        return None
    return value[0], value[1]


def _jitter_ranges(brightness, contrast, saturation, hue):
    return (_check_jitter(brightness, "brightness"), _check_jitter(contrast, "contrast"),
            _check_jitter(saturation, "saturation"),
            _check_jitter(hue, "hue", center=0.0, bound=(-0.5, 0.5), clip_first_on_zero=False))


def color_jitter_params(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
                        rng: Optional[np.random.Generator] = None) -> tuple[list[int], list[Optional[float]]]:
    """torchvision ``ColorJitter(b, c, s, h).get_params``: (op order, [b, c, s, h] factors).

    The arguments are ColorJitter's constructor arguments (a number or a (min, max) pair). The
    order is a permutation of 0..3 (brightness, contrast, saturation, hue) drawn first, then one
    uniform factor per enabled op in that fixed b, c, s, h order; a disabled op's factor is None.
    Factors are rounded to float32, as torchvision draws them into a float32 tensor.
    """
    if rng is None:
        raise TypeError("color_jitter_params needs a numpy Generator `rng`")
    ranges = _jitter_ranges(brightness, contrast, saturation, hue)
    order = [int(i) for i in rng.permutation(4)]
    factors = [None if r is None else float(np.float32(_uniform(rng, r[0], r[1]))) for r in ranges]
    return order, factors


def adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    """torchvision ``F.adjust_brightness`` on PIL (``ImageEnhance.Brightness``)."""
    return ImageEnhance.Brightness(img).enhance(factor)


def adjust_contrast(img: Image.Image, factor: float) -> Image.Image:
    """torchvision ``F.adjust_contrast`` on PIL (``ImageEnhance.Contrast``)."""
    return ImageEnhance.Contrast(img).enhance(factor)


def adjust_saturation(img: Image.Image, factor: float) -> Image.Image:
    """torchvision ``F.adjust_saturation`` on PIL (``ImageEnhance.Color``)."""
    return ImageEnhance.Color(img).enhance(factor)


def adjust_hue(img: Image.Image, factor: float) -> Image.Image:
    """torchvision ``F.adjust_hue`` on PIL: shift the HSV hue byte with uint8 wrap-around."""
    if not -0.5 <= factor <= 0.5:
        raise InputError(f"hue_factor ({factor}) is not in [-0.5, 0.5].")
    mode = img.mode
    if mode in {"L", "1", "I", "F"}:
        return img
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    # int32 truncates toward zero, then a negative shift wraps to uint8, as torchvision does.
    np_h += np.int32(factor * 255).astype(np.uint8)
    h = Image.fromarray(np_h, "L")
    return Image.merge("HSV", (h, s, v)).convert(mode)


_JITTER_FNS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(img: Image.Image, order: Sequence[int], factors: Sequence[Optional[float]]) -> Image.Image:
    """torchvision ``ColorJitter.forward`` with the parameters of :func:`color_jitter_params`."""
    for fn_id in order:
        if factors[fn_id] is not None:
            img = _JITTER_FNS[fn_id](img, factors[fn_id])
    return img


# --------------------------------------------------------------------------- RandAugment

_LEVEL_DENOM = 10.0  # magnitude M of 10 == the op's full range
_FILL = (128, 128, 128)
_HPARAMS_DEFAULT = {"translate_const": 250, "img_mean": _FILL}

RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
_RAND_3A = ("SolarizeIncreasing", "Desaturate", "GaussianBlur")
_RAND_WEIGHTED_3A = {
    "SolarizeIncreasing": 6, "Desaturate": 6, "GaussianBlur": 6, "Rotate": 3, "ShearX": 2, "ShearY": 2,
    "PosterizeIncreasing": 1, "AutoContrast": 1, "ColorIncreasing": 1, "SharpnessIncreasing": 1,
    "ContrastIncreasing": 1, "BrightnessIncreasing": 1, "Equalize": 1, "Invert": 1,
}
_RAND_WEIGHTED_0 = {
    "Rotate": 3, "ShearX": 2, "ShearY": 2, "TranslateXRel": 1, "TranslateYRel": 1, "ColorIncreasing": .25,
    "SharpnessIncreasing": 0.25, "AutoContrast": 0.25, "SolarizeIncreasing": .05, "SolarizeAdd": .05,
    "ContrastIncreasing": .05, "BrightnessIncreasing": .05, "Equalize": .05, "PosterizeIncreasing": 0.05,
    "Invert": 0.05,
}

# Ops whose level function draws a random sign (timm's `_randomly_negate`).
_SIGNED_OPS = frozenset({
    "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
})
# Ops that resample (timm's `_check_args_tf`), drawing bilinear/bicubic when no interpolation is set.
_GEOMETRIC_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel",
                            "TranslateYRel"})


def _level_args(name: str, level: float, hparams: Mapping, negate: bool) -> tuple:
    """timm's ``LEVEL_TO_ARG[name](level, hparams)`` with the random sign given as ``negate``."""
    sign = -1.0 if negate else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":  # [-30, 30] degrees
        return sign * ((level / _LEVEL_DENOM) * 30.0),
    if name == "Posterize":  # keep 0..4 bits, decreasing severity
        return int((level / _LEVEL_DENOM) * 4),
    if name == "PosterizeIncreasing":  # keep 4..0 bits
        return 4 - int((level / _LEVEL_DENOM) * 4),
    if name == "PosterizeOriginal":  # keep 4..8 bits
        return int((level / _LEVEL_DENOM) * 4) + 4,
    if name == "Solarize":  # threshold 0..256
        return min(256, int((level / _LEVEL_DENOM) * 256)),
    if name == "SolarizeIncreasing":
        return 256 - min(256, int((level / _LEVEL_DENOM) * 256)),
    if name == "SolarizeAdd":  # add 0..110
        return min(128, int((level / _LEVEL_DENOM) * 110)),
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):  # enhance factor [0.1, 1.9]
        return (level / _LEVEL_DENOM) * 1.8 + 0.1,
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        # 1.0 is "no change"; the level moves towards 0.1 or 1.9 with the sign, kept >= 0.1
        return max(0.1, 1.0 + sign * ((level / _LEVEL_DENOM) * .9)),
    if name in ("ShearX", "ShearY"):  # [-0.3, 0.3]
        return sign * ((level / _LEVEL_DENOM) * 0.3),
    if name in ("TranslateX", "TranslateY"):  # absolute pixels, [-translate_const, translate_const]
        return sign * ((level / _LEVEL_DENOM) * float(hparams["translate_const"])),
    if name in ("TranslateXRel", "TranslateYRel"):  # fraction of the size, default [-0.45, 0.45]
        return sign * ((level / _LEVEL_DENOM) * hparams.get("translate_pct", 0.45)),
    if name in ("Desaturate", "GaussianBlur"):  # timm's _minmax_level_to_arg with its partial() bounds
        lo, hi = (0.5, 1.0) if name == "Desaturate" else (0.1, 2.0)
        value = lo + (hi - lo) * (level / _LEVEL_DENOM)
        return max(lo, min(hi, value)),
    raise InputError(f"unknown RandAugment op {name!r}")


def _affine(img: Image.Image, matrix: tuple, resample: int, fillcolor) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fillcolor)


def _apply_op(img: Image.Image, name: str, args: tuple, resample: int, fillcolor) -> Image.Image:
    """timm's ``NAME_TO_OP[name](img, *args, fillcolor=..., resample=...)`` (same PIL calls)."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return img.rotate(args[0], resample=resample, fillcolor=fillcolor)
    if name.startswith("Posterize"):
        bits = args[0]
        if bits >= 8:
            return img
        if bits <= 0:
            # Keep no bits: all-black, as Pillow < 13 (and TF's posterize) computed it. Pillow 13's
            # ImageOps.posterize rejects bits=0, which reaches timm at Posterize M < 2.5 and at
            # PosterizeIncreasing M = 10 (e.g. mstd noise clipped to 10) and makes timm raise.
            return img.point([0] * (256 * len(img.getbands()))) if img.mode in ("L", "RGB") else img
        return ImageOps.posterize(img, bits)
    if name in ("Solarize", "SolarizeIncreasing"):
        return ImageOps.solarize(img, args[0])
    if name == "SolarizeAdd":
        add, thresh = args[0], 128
        lut = [min(255, i + add) if i < thresh else i for i in range(256)]
        if img.mode in ("L", "RGB"):
            return img.point(lut * 3 if img.mode == "RGB" else lut)
        return img
    if name.startswith("Color"):
        return ImageEnhance.Color(img).enhance(args[0])
    if name.startswith("Contrast"):
        return ImageEnhance.Contrast(img).enhance(args[0])
    if name.startswith("Brightness"):
        return ImageEnhance.Brightness(img).enhance(args[0])
    if name.startswith("Sharpness"):
        return ImageEnhance.Sharpness(img).enhance(args[0])
    if name == "ShearX":
        return _affine(img, (1, args[0], 0, 0, 1, 0), resample, fillcolor)
    if name == "ShearY":
        return _affine(img, (1, 0, 0, args[0], 1, 0), resample, fillcolor)
    if name in ("TranslateX", "TranslateXRel"):
        pixels = args[0] * img.size[0] if name == "TranslateXRel" else args[0]
        return _affine(img, (1, 0, pixels, 0, 1, 0), resample, fillcolor)
    if name in ("TranslateY", "TranslateYRel"):
        pixels = args[0] * img.size[1] if name == "TranslateYRel" else args[0]
        return _affine(img, (1, 0, 0, 0, 1, pixels), resample, fillcolor)
    if name == "Desaturate":
        return ImageEnhance.Color(img).enhance(min(1.0, max(0.0, 1.0 - args[0])))
    if name == "GaussianBlur":
        return img.filter(ImageFilter.GaussianBlur(radius=args[0]))
    raise InputError(f"unknown RandAugment op {name!r}")


def augment_op(img: Image.Image, name: str, magnitude: float, hparams: Mapping, negate: bool,
               resample: int) -> Image.Image:
    """One timm ``AugmentOp`` application at a fixed (already clipped) magnitude and sign.

    ``hparams`` gives ``img_mean`` (fill colour, default (128, 128, 128)), ``translate_const``
    and ``translate_pct``; ``resample`` is the PIL filter for geometric ops (ignored otherwise);
    ``negate`` the sign for signed ops (ignored otherwise).
    """
    fillcolor = hparams["img_mean"] if "img_mean" in hparams else _FILL
    return _apply_op(img, name, _level_args(name, magnitude, hparams, negate), int(resample), fillcolor)


@dataclass(frozen=True)
class RandAugment:
    """timm ``rand_augment_transform(config, hparams)``: ``num_layers`` ops chosen per image.

    Ops are chosen with replacement (uniformly), or without replacement by weight for the
    weighted sets ("tweights", "t3aw"); each is applied with probability ``prob``, at magnitude
    ``magnitude`` (+ N(0, magnitude_std) noise, or uniform in [0, magnitude] when the std is
    inf) clipped to [0, magnitude_max or 10].
    """

    ops: tuple[str, ...]
    num_layers: int = 2
    magnitude: float = 10.0
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: Optional[float] = None
    choice_weights: Optional[tuple[float, ...]] = None
    hparams: Mapping = field(default_factory=lambda: dict(_HPARAMS_DEFAULT), hash=False)

    @classmethod
    def from_config(cls, config: str, hparams: Optional[Mapping] = None) -> "RandAugment":
        """Parse timm's config string: "rand" then dash-separated m<int>, n<int>, p<float>,
        mstd<float> (> 100 means uniform), mmax<int>, inc<0|1>, t<set name> (weights/3a/3aw).

        Like timm, an empty ``hparams`` means timm's defaults (translate_const 250, fill 128) and
        ``mstd``/``mmax`` only apply when ``hparams`` does not already set them.
        """
        hparams = dict(hparams) if hparams else dict(_HPARAMS_DEFAULT)
        magnitude: float = _LEVEL_DENOM
        num_layers, increasing, prob = 2, False, 0.5
        transforms_name: Optional[str] = None
        sections = config.split("-")
        if sections[0] != "rand":
            raise InputError(f"RandAugment config must start with 'rand': {config!r}")
        for c in sections[1:]:
            if c.startswith("t"):
                transforms_name = transforms_name or c[1:]
                continue
            cs = re.split(r"(\d.*)", c)
            if len(cs) < 2:  # timm silently skips sections without a number
                continue
            key, val = cs[:2]
            if key == "mstd":
                mstd = float(val)
                hparams.setdefault("magnitude_std", float("inf") if mstd > 100 else mstd)
            elif key == "mmax":
                hparams.setdefault("magnitude_max", int(val))
            elif key == "inc":
                increasing = bool(int(val))
            elif key == "m":
                magnitude = int(val)
            elif key == "n":
                num_layers = int(val)
            elif key == "p":
                prob = float(val)
            else:
                raise InputError(f"Unknown RandAugment config section {c!r} in {config!r}")

        choice_weights = None
        if transforms_name is None:
            ops = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
        elif transforms_name in ("weights", "3aw"):
            table = _RAND_WEIGHTED_0 if transforms_name == "weights" else _RAND_WEIGHTED_3A
            ops = tuple(table)
            weights = np.array(list(table.values()), dtype=np.float64)
            choice_weights = tuple(float(w) for w in weights / np.sum(weights))
        elif transforms_name == "3a":
            ops = _RAND_3A
        else:  # timm falls back to the (increasing) default list for any other name
            ops = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
        return cls(ops=tuple(ops), num_layers=num_layers, magnitude=magnitude, prob=prob,
                   magnitude_std=float(hparams.get("magnitude_std", 0)),
                   magnitude_max=hparams.get("magnitude_max"), choice_weights=choice_weights, hparams=hparams)

    def _default_resample(self) -> int:
        return int(self.hparams.get("interpolation", Image.Resampling.BICUBIC))

    def draw(self, rng: np.random.Generator) -> list[tuple[str, bool, float, bool, int]]:
        """All random choices for one image, in timm's order: the ops (``np.random.choice``),
        then per op: applied? (``random() <= prob``), magnitude noise, sign (signed ops only),
        resample (geometric ops without a fixed interpolation only).

        Returns per layer (name, applied, clipped magnitude, negate, PIL resample). For a
        skipped op the magnitude is the nominal one; ``resample`` is the fixed interpolation
        (bicubic when none) for ops that do not draw it.
        """
        n = len(self.ops)
        if self.choice_weights is None:
            idx = rng.integers(0, n, size=self.num_layers)
        else:  # weighted sets: without replacement, as np.random.choice(..., replace=False, p=w)
            idx = rng.choice(n, self.num_layers, replace=False, p=np.asarray(self.choice_weights))
        fixed_resample = "interpolation" in self.hparams
        layers = []
        for i in idx:
            name = self.ops[int(i)]
            if self.prob < 1.0 and rng.random() > self.prob:
                layers.append((name, False, float(self.magnitude), False, self._default_resample()))
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                if self.magnitude_std == float("inf"):
                    magnitude = _uniform(rng, 0.0, magnitude)
                else:
                    magnitude = rng.normal(magnitude, self.magnitude_std)
            upper_bound = self.magnitude_max or _LEVEL_DENOM
            magnitude = float(max(0.0, min(magnitude, upper_bound)))
            negate = bool(rng.random() > 0.5) if name in _SIGNED_OPS else False
            if name in _GEOMETRIC_OPS and not fixed_resample:
                resample = int(PIL_INTERPOLATIONS[_RANDOM_INTERPOLATION[int(rng.integers(0, 2))]])
            else:
                resample = self._default_resample()
            layers.append((name, True, magnitude, negate, resample))
        return layers

    def apply(self, img: Image.Image, layers: Sequence[tuple[str, bool, float, bool, int]]) -> Image.Image:
        """Apply the layers returned by :meth:`draw`."""
        for name, applied, magnitude, negate, resample in layers:
            if applied:
                img = augment_op(img, name, magnitude, self.hparams, negate, resample)
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(img, self.draw(rng))


# --------------------------------------------------------------------------- random erasing


def erasing_box(height: int, width: int, probability: float, rng: np.random.Generator, min_area: float = 0.02,
                max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: Optional[float] = None) -> np.ndarray:
    """timm ``RandomErasing._erase`` with one box: int32 [top, bottom, left, right], zeros if none.

    Draws the probability first (erase when ``u <= probability``), then up to 10 attempts of
    (area fraction, log-uniform aspect), accepted when ``w < width and h < height``.
    """
    box = np.zeros(4, np.int32)
    if rng.random() > probability:
        return box
    max_aspect = max_aspect or 1 / min_aspect
    log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
    area, count = height * width, 1
    for _ in range(10):
        target_area = _uniform(rng, min_area, max_area) * area / count
        aspect_ratio = math.exp(_uniform(rng, *log_aspect_ratio))
        h = int(round(math.sqrt(target_area * aspect_ratio)))
        w = int(round(math.sqrt(target_area / aspect_ratio)))
        if w < width and h < height:
            top = _randint(rng, 0, height - h)
            left = _randint(rng, 0, width - w)
            box[:] = (top, top + h, left, left + w)
            return box
    return box


def apply_erasing(image: np.ndarray, box: Sequence[int], noise: np.ndarray) -> np.ndarray:
    """Numpy reference of timm's pixel-mode erase on a normalised float HWC image: a copy in
    which ``image[top:bottom, left:right]`` is replaced by the same region of the full-size HWC
    ``noise`` (per-pixel, per-channel N(0, 1) values)."""
    top, bottom, left, right = (int(v) for v in box)
    out = np.array(image, copy=True)
    out[top:bottom, left:right] = noise[top:bottom, left:right]
    return out


def erasing_capacity(height: int, width: int, max_area: float = 1 / 3) -> int:
    """Pixels one erasing box can cover at most: the area drawn is at most ``max_area * H * W``,
    and rounding h and w (each below the image's side) adds less than ``(H + W) / 2 + 1``."""
    return int(max_area * height * width) + (height + width) // 2 + 2


def erasing_noise(box: Sequence[int], channels: int, rng: np.random.Generator,
                  out: Optional[np.ndarray] = None) -> np.ndarray:
    """The pixel-mode fill of ``box``: N(0, 1) per pixel and channel, drawn after the box as
    timm draws it, as a flat float32 array in row-major (h, w, channels) order (empty when the
    box is). Only the box's values are drawn and moved: the batch draws them straight into the
    start of the image's row of its noise buffer (``out``; ``train.pipeline.Collate``) and the
    device writes them in (``train.task.prepare_images``)."""
    top, bottom, left, right = (int(v) for v in box)
    size = (bottom - top) * (right - left) * channels
    if out is None:
        return rng.standard_normal(size, dtype=np.float32)
    if size > len(out):
        raise ValueError(f"erasing box {[top, bottom, left, right]} is larger than its buffer ({len(out) // channels} pixels)")
    return rng.standard_normal(size, dtype=np.float32, out=out[:size])


def place_erasing_noise(box: Sequence[int], buffer: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Numpy reference of where ``prepare_images`` puts a box's noise (``buffer`` starts with
    the values of ``erasing_noise``): a full-size HWC array holding them inside the box, zeros
    elsewhere."""
    top, bottom, left, right = (int(v) for v in box)
    full = np.zeros(shape, np.float32)
    full[top:bottom, left:right] = buffer[:(bottom - top) * (right - left) * shape[2]].reshape(
        bottom - top, right - left, shape[2])
    return full


# --------------------------------------------------------------------------- evaluation


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainTransform:
    """timm ``transforms_imagenet_train`` (rrc crop mode) up to ``ToTensor``, plus the erasing box.

    Order and draws: RandomResizedCrop params, its interpolation ("random": bilinear/bicubic),
    horizontal flip, then RandAugment when ``auto_augment`` is set, else colour jitter (timm
    disables jitter under auto_augment unless ``force_color_jitter``), then the erasing box,
    which is applied on device after normalisation. Returns (uint8 HWC image, int32[4] box).
    """

    img_size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip: float = 0.5
    color_jitter: Union[float, tuple, None] = 0.4
    force_color_jitter: bool = False
    auto_augment: Optional[str] = None
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    re_prob: float = 0.0
    _rand_augment: Optional[RandAugment] = field(init=False, default=None, repr=False, compare=False)
    _jitter: Optional[tuple] = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", (int(self.img_size[0]), int(self.img_size[1])))
        if self.interpolation != "random":
            pil_interpolation(self.interpolation)  # validate early
        disable_color_jitter = False
        if self.auto_augment:
            if not self.auto_augment.startswith("rand"):
                raise InputError(f"only RandAugment ('rand-...') is supported, got {self.auto_augment!r}")
            disable_color_jitter = not (self.force_color_jitter or "3a" in self.auto_augment)
            # create_transform's aa_params (transforms_imagenet_train)
            hparams: dict = {
                "translate_const": int(min(self.img_size) * 0.45),
                "img_mean": tuple(min(255, round(255 * x)) for x in self.mean),
            }
            if self.interpolation and self.interpolation != "random":
                hparams["interpolation"] = pil_interpolation(self.interpolation)
            object.__setattr__(self, "_rand_augment", RandAugment.from_config(self.auto_augment, hparams))
        if self.color_jitter is not None and not disable_color_jitter:
            cj = self.color_jitter
            if isinstance(cj, (list, tuple)):
                if len(cj) not in (3, 4):
                    raise InputError("color_jitter must be a number or a 3- or 4-tuple")
                cj = tuple(cj) + (0.0,) * (4 - len(cj))
            else:  # a scalar jitters brightness, contrast and saturation, not hue
                cj = (float(cj),) * 3 + (0.0,)
            _jitter_ranges(*cj)  # validate early
            object.__setattr__(self, "_jitter", cj)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        top, left, h, w = random_resized_crop_params(img.width, img.height, self.scale, self.ratio, rng)
        interpolation = self.interpolation
        if interpolation == "random":
            interpolation = _RANDOM_INTERPOLATION[int(rng.integers(0, 2))]
        img = resized_crop(img, top, left, h, w, self.img_size, interpolation)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = hflip(img)
        if self._rand_augment is not None:
            img = self._rand_augment(img, rng)
        if self._jitter is not None:
            img = color_jitter(img, *color_jitter_params(*self._jitter, rng=rng))
        image = np.asarray(img, dtype=np.uint8)
        if self.re_prob > 0:
            box = erasing_box(self.img_size[0], self.img_size[1], self.re_prob, rng)
        else:
            box = np.zeros(4, np.int32)
        return image, box
