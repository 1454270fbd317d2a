"""Data: scikit-learn's digits (in memory) or an ImageFolder tree (files), and the per-batch
mixup / cutmix parameters. `train.pipeline` turns a split into batches.

Every random choice (epoch order, augmentation, mixup) is drawn from a generator seeded by
(seed, step[, position]), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from swin_jax.arguments import InputError, MissingInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class ArraySplit:
    """In-memory images (float32 NHWC, already normalised) with integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A short hash of the arrays' bytes (`train.pipeline.source_fingerprint`)."""
        digest = hashlib.sha1()
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.asarray(self.labels).tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FileSplit:
    """Image files (decoded in the pipeline's workers) with integer labels."""

    files: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A short hash of the file names (below the data folder: the folder may move) and labels."""
        digest = hashlib.sha1()
        root = os.path.commonpath(self.files)
        for f, label in zip(self.files, self.labels):
            digest.update(f"{os.path.relpath(f, root)}\0{label}\n".encode())
        return digest.hexdigest()[:16]


Split = Union[ArraySplit, FileSplit]


@dataclass
class Dataset:
    """A training and a test split, with what the model is built for."""

    train: Split
    test: Split
    num_classes: int
    in_chans: int
    img_size: tuple[int, int]


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
    images = (images - images.mean()) / images.std()
    train, test = _stratified_split(digits.target, val_split, seed)
    return Dataset(ArraySplit(images[train], digits.target[train]), ArraySplit(images[test], digits.target[test]),
                   10, 1, tuple(img_size))


def natural_key(text: str) -> list:
    """Sort key that orders "class2" before "class10" (timm's order of folders and files)."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", text.lower())]


def _check_folder(folder: Path) -> None:
    """An ImageFolder root: a folder that exists (a file or a missing path says which)."""
    if folder.is_file():
        raise InputError(f"data {folder} is a file, not an ImageFolder directory (DATA/<class>/<image>)")
    if not folder.is_dir():
        raise MissingInputError(f"data directory not found: {folder}")


def scan_image_folder(folder: str | Path, classes: Optional[list[str]] = None) -> tuple[FileSplit, list[str]]:
    """The images of an ImageFolder tree (`folder/<class>/<image>`), in timm's order: class
    folders and files sorted naturally. `classes` fixes the class list (a validation folder
    must have the training folder's classes)."""
    folder = Path(folder)
    _check_folder(folder)
    found = sorted((p.name for p in folder.iterdir() if p.is_dir()), key=natural_key)
    if not found:
        raise InputError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    if classes is not None and found != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise InputError(f"{folder} does not have the training classes: missing {missing[:5]}, "
                         f"unexpected {extra[:5]} ({len(found)} folders, {len(classes)} classes)")
    files, labels = [], []
    for label, name in enumerate(found):
        names = sorted((f.name for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                       key=natural_key)
        files += [str(folder / name / f) for f in names]
        labels += [label] * len(names)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders of {folder}")
    return FileSplit(tuple(files), np.array(labels, np.int32)), found


def load_image_folder(root: str | Path, img_size: tuple[int, int], val_split: float, seed: int) -> Dataset:
    """An ImageFolder tree (a folder per class). `root/train` and `root/val` are used when both
    exist; otherwise a stratified `val_split` of `root` is held out."""
    root = Path(root)
    _check_folder(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, classes = scan_image_folder(root / "train")
        test, _ = scan_image_folder(root / "val", classes)
    else:
        files, classes = scan_image_folder(root)
        if len(files) < 2:
            raise InputError(f"{root} holds {len(files)} image(s): too few to split into train and test")
        tr, te = _stratified_split(files.labels, val_split, seed)
        train = FileSplit(tuple(files.files[i] for i in tr), files.labels[tr])
        test = FileSplit(tuple(files.files[i] for i in te), files.labels[te])
    return Dataset(train, test, len(classes), 3, tuple(img_size))


def load_dataset(data: str, img_size: tuple[int, int], val_split: float, seed: int) -> Dataset:
    if data == "digits":
        return load_digits(img_size, val_split, seed)
    return load_image_folder(data, img_size, val_split, seed)


# ----- augmentation of in-memory images and of whole batches


def shift_image(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
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
    targets; the cutmix box is (y0, y1, x0, x1). Applied on device by `train.classification.apply_mix`."""
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
