"""Data: scikit-learn's digits or an ImageFolder tree, deterministic batches and augmentation.

Every random choice (epoch order, augmentation, mixup) is drawn from a generator seeded by
(seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Split:
    """Images as float32 NHWC arrays (normalised) or file paths, with integer labels."""

    images: np.ndarray | list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    train: Split
    test: Split
    num_classes: int
    in_chans: int
    img_size: tuple[int, int]
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    return train_test_split(index, test_size=fraction, stratify=labels, random_state=seed)


def load_digits(img_size: tuple[int, int], val_split: float, seed: int) -> Dataset:
    """scikit-learn's 8x8 digits, upsampled bilinearly, split 80/20 stratified (seed 0 by default)."""
    import jax
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    images = digits.images.astype(np.float32)[..., None] / 16.0
    images = np.asarray(jax.image.resize(images, (len(images), *img_size, 1), "bilinear"))
    mean, std = images.mean(), images.std()
    images = (images - mean) / std
    train, test = _stratified_split(digits.target, val_split, seed)
    return Dataset(Split(images[train], digits.target[train]), Split(images[test], digits.target[test]),
                   10, 1, tuple(img_size), [str(i) for i in range(10)], np.array([mean]), np.array([std]))


def load_image_folder(root: str | Path, img_size: tuple[int, int], val_split: float, seed: int) -> Dataset:
    """An ImageFolder tree (a folder per class). `root/train` and `root/val` are used when both
    exist; otherwise a stratified `val_split` of `root` is held out."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")

    def scan(folder: Path) -> tuple[list[Path], list[str]]:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise ValueError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
        return [f for c in classes for f in sorted((folder / c).iterdir())
                if f.suffix.lower() in IMAGE_SUFFIXES], classes

    if (root / "train").is_dir() and (root / "val").is_dir():
        train_files, classes = scan(root / "train")
        test_files, test_classes = scan(root / "val")
        if test_classes != classes:
            raise ValueError(f"{root}/train and {root}/val have different class folders")
        train = Split(train_files, np.array([classes.index(f.parent.name) for f in train_files]))
        test = Split(test_files, np.array([classes.index(f.parent.name) for f in test_files]))
    else:
        files, classes = scan(root)
        labels = np.array([classes.index(f.parent.name) for f in files])
        tr, te = _stratified_split(labels, val_split, seed)
        train, test = Split([files[i] for i in tr], labels[tr]), Split([files[i] for i in te], labels[te])
    if len(train) == 0:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet, as timm
    return Dataset(train, test, len(classes), 3, tuple(img_size), classes, mean, std)


def load_dataset(data: str, img_size: tuple[int, int], val_split: float, seed: int) -> Dataset:
    if data == "digits":
        return load_digits(img_size, val_split, seed)
    return load_image_folder(data, img_size, val_split, seed)


# ----- augmentation (numpy, on the host)


def _open_image(path: Path, size: tuple[int, int], rng: Optional[np.random.Generator], crop_scale: float,
                hflip: float) -> np.ndarray:
    """Pillow: random resized crop (area fraction in [crop_scale, 1], ratio 3/4..4/3) and flip for
    training (rng given), plain resize for evaluation; float32 HWC in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        box = (0, 0, w, h)
        if rng is not None and crop_scale < 1.0:
            for _ in range(10):
                area = w * h * rng.uniform(crop_scale, 1.0)
                ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
                cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
                if 0 < cw <= w and 0 < ch <= h:
                    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
                    box = (x0, y0, x0 + cw, y0 + ch)
                    break
        im = im.resize((size[1], size[0]), Image.BICUBIC, box=box)
        out = np.asarray(im, np.float32) / 255.0
    if rng is not None and rng.uniform() < hflip:
        out = out[:, ::-1]
    return out


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate one image by (dy, dx) pixels, filling with the background (its minimum)."""
    out = np.full_like(image, image.min())
    h, w = image.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def mix_parameters(step: int, seed: int, img_size: tuple[int, int], mixup: float, cutmix: float,
                   switch_prob: float) -> dict[str, np.ndarray]:
    """This step's timm-style batch mixing, drawn on the host (identically on every process):
    mixup or cutmix (chosen with switch_prob) of the batch with its reverse. `lam` weighs the
    targets; the cutmix box is (y0, y1, x0, x1). Applied on device by `train.loop.apply_mix`."""
    rng = np.random.default_rng([seed, 2, step])
    h, w = img_size
    if mixup <= 0 and cutmix <= 0:
        return dict(lam=np.float32(1.0), cutmix=np.bool_(False), box=np.zeros(4, np.int32))
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.uniform() < switch_prob)
    lam = rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup)
    box = np.zeros(4, np.int32)
    if use_cutmix:
        cut = np.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = rng.integers(h), rng.integers(w)
        box = np.array([np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
                        np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)], np.int32)
        lam = 1 - (box[1] - box[0]) * (box[3] - box[2]) / (h * w)  # the area actually kept
    return dict(lam=np.float32(lam), cutmix=np.bool_(use_cutmix), box=box)


def soft_targets(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    off = smoothing / num_classes
    out = np.full((len(labels), num_classes), off, np.float32)
    out[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return out


class Loader:
    """Deterministic batches of one process's share of the global batch."""

    def __init__(self, data: Dataset, split: Split, batch_size: int, seed: int, train: bool,
                 process_index: int = 0, process_count: int = 1, crop_scale: float = 1.0, hflip: float = 0.0,
                 shift: int = 0):
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} does not split over {process_count} processes")
        self.data, self.split, self.batch_size, self.seed, self.train = data, split, batch_size, seed, train
        self.process_index, self.process_count = process_index, process_count
        self.crop_scale, self.hflip, self.shift = crop_scale, hflip, shift

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _images(self, index: np.ndarray, rngs: Optional[list[np.random.Generator]]) -> np.ndarray:
        if isinstance(self.split.images, np.ndarray):
            out = self.split.images[index]
            if rngs is not None and self.shift:
                out = np.stack([_shift(im, *r.integers(-self.shift, self.shift + 1, size=2)) for im, r in zip(out, rngs)])
            return out
        d = self.data
        out = np.stack([_open_image(self.split.images[i], d.img_size, None if rngs is None else rngs[k],
                                    self.crop_scale, self.hflip) for k, i in enumerate(index)])
        return ((out - d.mean) / d.std).astype(np.float32)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, labels, weights) of this process for global step `step`. Training batches
        follow an epoch permutation, each image augmented with a generator seeded by its place in
        the global batch (so the split over processes changes nothing); evaluation batches are
        padded with weight 0."""
        per_process = self.batch_size // self.process_count
        mine = slice(self.process_index * per_process, (self.process_index + 1) * per_process)
        if self.train:
            epoch, within = divmod(step, self.steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
            index = order[within * self.batch_size:(within + 1) * self.batch_size][mine]
            weights = np.ones(len(index), np.float32)
            rngs = [np.random.default_rng([self.seed, 1, step, p]) for p in range(mine.start, mine.stop)]
        else:
            index = np.arange(step * self.batch_size, min((step + 1) * self.batch_size, len(self.split)))
            weights = np.ones(self.batch_size, np.float32)
            weights[len(index):] = 0
            index = np.concatenate([index, np.zeros(self.batch_size - len(index), int)])[mine]
            weights, rngs = weights[mine], None
        return self._images(index, rngs), self.split.labels[index], weights

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for i in range(self.steps_per_epoch):
            yield self.batch(epoch * self.steps_per_epoch + i if self.train else i)
