"""train/transforms.py against the installed timm and torchvision: pixel equality of every op and
the same random draws when timm's `random` / `numpy.random` / `torch` draws are made to follow
the numpy Generator (the Scripted* stand-ins below consume it exactly as train.transforms does).

No op needs a grey-level allowance: the same PIL calls with the same arguments give equal pixels.
The one deliberate difference: posterize to 0 bits, which Pillow 13 rejects (timm raises), gives
the all-black image that Pillow < 13 gave."""
from __future__ import annotations

import math
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import run_cli
from PIL import Image
from scipy import stats

import timm.data.auto_augment as timm_aa
import timm.data.random_erasing as timm_re
import timm.data.transforms as timm_tf
import torchvision.transforms.transforms as tv_transforms
from timm.data import create_transform
from timm.data.transforms_factory import transforms_imagenet_train
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from train import transforms as T

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel"}


def make_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """Smooth random RGB content (upsampled coarse noise + fine noise) so resampling filters differ."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((height // 8 + 3, width // 8 + 3, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float32)
    noisy = smooth + rng.normal(0, 12, smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


# ---------------------------------------------------------------- scripted timm / torch randomness


class ScriptedRandom:
    """Python's `random` API drawing from a numpy Generator the way train.transforms maps it."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def random(self):
        return self.rng.random()

    def uniform(self, a, b):
        return a + (b - a) * self.rng.random()

    def randint(self, a, b):
        return int(self.rng.integers(a, b + 1))

    def gauss(self, mu, sigma):
        return self.rng.normal(mu, sigma)

    def choice(self, seq):
        return seq[int(self.rng.integers(0, len(seq)))]


class _ScriptedEmpty:
    def __init__(self, rng):
        self.rng = rng

    def uniform_(self, a, b):  # torch fills a float32 tensor
        return torch.tensor([np.float32(a + (b - a) * self.rng.random())], dtype=torch.float32)


class ScriptedTorch:
    """`torch` as seen by torchvision.transforms.transforms: rand / randperm / empty(1).uniform_ scripted."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __getattr__(self, name):
        return getattr(torch, name)

    def rand(self, *size):
        assert size in ((1,), ()), size
        return torch.tensor([self.rng.random()], dtype=torch.float64)

    def randperm(self, n):
        return torch.as_tensor(self.rng.permutation(n))

    def empty(self, *size):
        return _ScriptedEmpty(self.rng)


def scripted_np_choice(rng: np.random.Generator):
    def choice(a, size=None, replace=True, p=None):
        if replace and p is None:
            idx = rng.integers(0, len(a), size=size)
        else:
            idx = rng.choice(len(a), size, replace=replace, p=p)
        return [a[int(i)] for i in idx]

    return choice


def script_everything(monkeypatch, seed: int) -> np.random.Generator:
    """Route every random draw of timm's train pipeline to one Generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    fake = ScriptedRandom(rng)
    for module in (timm_tf, timm_aa, timm_re):
        monkeypatch.setattr(module, "random", fake)
    monkeypatch.setattr(tv_transforms, "torch", ScriptedTorch(rng))
    monkeypatch.setattr(np.random, "choice", scripted_np_choice(rng))
    return rng


# ---------------------------------------------------------------- basics


def test_constants_and_interpolation_names():
    assert T.IMAGENET_DEFAULT_MEAN == IMAGENET_DEFAULT_MEAN and T.IMAGENET_DEFAULT_STD == IMAGENET_DEFAULT_STD
    for name in ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"):
        assert T.pil_interpolation(name) == timm_tf.str_to_pil_interp(name)
    with pytest.raises(ValueError):
        T.pil_interpolation("random")


def test_module_imports_neither_jax_nor_torch():
    code = "import sys, train.transforms; bad = {'jax', 'torch'} & set(sys.modules); assert not bad, bad"
    result = run_cli("python", "-c", code, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 1. random resized crop

RRC_CASES = [
    # (width, height, scale, ratio, always_fallback)
    (500, 375, (0.08, 1.0), (3 / 4, 4 / 3), False),
    (375, 500, (0.08, 1.0), (3 / 4, 4 / 3), False),
    (37, 401, (0.08, 1.0), (3 / 4, 4 / 3), False),  # thin: many attempts fail, some fall back
    (500, 21, (0.5, 1.0), (3 / 4, 4 / 3), False),
    (120, 100, (0.95, 1.0), (2.5, 3.0), True),  # in_ratio < min(ratio): full width, clamped height
    (100, 130, (0.95, 1.0), (0.2, 0.3), True),  # in_ratio > max(ratio): full height, clamped width
    (100, 100, (1.0, 1.0), (0.9, 1.1), True),  # ratio in range, area too big: whole image
]


@pytest.mark.parametrize("width,height,scale,ratio,always_fallback", RRC_CASES)
def test_random_resized_crop_params(monkeypatch, width, height, scale, ratio, always_fallback):
    img = Image.new("RGB", (width, height))
    fallbacks = 0
    for seed in range(300):
        ours = T.random_resized_crop_params(width, height, scale, ratio, np.random.default_rng(seed))
        check = np.random.default_rng(seed)
        monkeypatch.setattr(timm_tf, "random", ScriptedRandom(check))
        theirs = timm_tf.RandomResizedCropAndInterpolation.get_params(img, scale, ratio)
        assert ours == tuple(theirs), (seed, ours, theirs)
        assert all(isinstance(v, int) for v in ours)
        # both sides consumed the same number of draws
        probe = np.random.default_rng(seed)
        T.random_resized_crop_params(width, height, scale, ratio, probe)
        assert probe.random() == check.random()
        fallbacks += _is_fallback(width, height, ratio, ours)
    if always_fallback:
        assert fallbacks == 300
    elif width == 37:
        assert 0 < fallbacks < 300


def _is_fallback(width, height, ratio, params) -> bool:
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return params == ((height - h) // 2, (width - w) // 2, h, w)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("out_size", [(224, 224), (96, 160)])
def test_resized_crop_pixels(monkeypatch, record, interpolation, out_size):
    for n, (h, w) in enumerate([(375, 500), (500, 375), (101, 77)]):
        img = make_image(h, w, seed=n)
        rrc = timm_tf.RandomResizedCropAndInterpolation(out_size, interpolation=interpolation)
        for seed in range(6):
            params = T.random_resized_crop_params(w, h, rrc.scale, rrc.ratio, np.random.default_rng(seed))
            ours = T.resized_crop(img, *params, out_size, interpolation)
            monkeypatch.setattr(timm_tf, "random", ScriptedRandom(np.random.default_rng(seed)))
            theirs = rrc(img)
            assert ours.size == (out_size[1], out_size[0])
            diff = record("transforms RRC pixels (grey levels)", max_diff(pixels(ours), pixels(theirs)))
            assert diff == 0, (interpolation, params)


# ---------------------------------------------------------------- 2. flip and colour jitter


def test_hflip():
    img = make_image(45, 67)
    np.testing.assert_array_equal(pixels(T.hflip(img)), pixels(TF.hflip(img)))
    np.testing.assert_array_equal(pixels(T.hflip(img)), pixels(img)[:, ::-1])


@pytest.mark.parametrize("fn,factors", [
    ("adjust_brightness", [0.0, 0.6, 0.93, 1.0, 1.37, 1.9]),
    ("adjust_contrast", [0.0, 0.6, 0.93, 1.0, 1.37, 1.9]),
    ("adjust_saturation", [0.0, 0.6, 0.93, 1.0, 1.37, 1.9]),
    ("adjust_hue", [-0.5, -0.37, -0.1, -0.004, 0.0, 0.05, 0.2, 0.5]),
])
def test_colour_adjustments(record, fn, factors):
    img = make_image(123, 157, seed=3)
    for f in factors:
        diff = record(f"transforms {fn} (grey levels)",
                      max_diff(pixels(getattr(T, fn)(img, f)), pixels(getattr(TF, fn)(img, f))))
        assert diff == 0, f


JITTER_ARGS = [(0.4, 0.4, 0.4, 0.0), (0.4, 0.4, 0.4, 0.1), (0.0, 0.3, 0.0, 0.2), ((0.5, 1.2), 0.0, (0.9, 1.5), 0.0),
               (1.3, 0.4, 0.0, (-0.2, 0.3))]


@pytest.mark.parametrize("args", JITTER_ARGS)
def test_color_jitter_params_and_pixels(monkeypatch, record, args):
    img = make_image(80, 96, seed=5)
    cj = tv_transforms.ColorJitter(*args)
    for seed in range(20):
        order, factors = T.color_jitter_params(*args, rng=np.random.default_rng(seed))
        monkeypatch.setattr(tv_transforms, "torch", ScriptedTorch(np.random.default_rng(seed)))
        fn_idx, *theirs = cj.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue)
        assert order == fn_idx.tolist() and factors == theirs, (seed, order, factors, fn_idx, theirs)
        if seed < 6:
            monkeypatch.setattr(tv_transforms, "torch", ScriptedTorch(np.random.default_rng(seed)))
            diff = record("transforms ColorJitter pixels (grey levels)",
                          max_diff(pixels(T.color_jitter(img, order, factors)), pixels(cj(img))))
            assert diff == 0


# ---------------------------------------------------------------- 3. RandAugment ops

ALL_OPS = sorted(set(T.RAND_TRANSFORMS) | set(T.RAND_INCREASING_TRANSFORMS)
                 | {"TranslateX", "TranslateY", "PosterizeOriginal", "Desaturate", "GaussianBlur"})
HPARAMS = [
    dict(translate_const=100, img_mean=(124, 116, 104), interpolation=Image.Resampling.BICUBIC),
    dict(translate_const=72, img_mean=(124, 116, 104), interpolation=Image.Resampling.BILINEAR, translate_pct=0.3),
    dict(translate_const=100, img_mean=(124, 116, 104)),  # no interpolation: drawn bilinear/bicubic per op
]


class FixedRandom:
    """timm's `random` inside AugmentOp with the sign and the resample decided in advance."""

    def __init__(self, negate: bool, resample_index: int):
        self.negate, self.resample_index, self.calls = negate, resample_index, {"random": 0, "choice": 0}

    def random(self):
        self.calls["random"] += 1
        return 0.75 if self.negate else 0.25

    def choice(self, seq):
        self.calls["choice"] += 1
        return seq[self.resample_index]


@pytest.mark.parametrize("name", ALL_OPS)
def test_augment_op_matches_timm(monkeypatch, record, name):
    img = make_image(97, 131, seed=7)
    for hp_index, hparams in enumerate(HPARAMS):
        fixed = "interpolation" in hparams
        resample_choices = [(None, hparams["interpolation"])] if fixed else \
            [(0, Image.Resampling.BILINEAR), (1, Image.Resampling.BICUBIC)]
        if name not in GEOMETRIC:
            resample_choices = resample_choices[:1]
        for magnitude in (0, 2.5, 5, 7.3, 9, 10):
            for negate in (False, True):
                for index, resample in resample_choices:
                    fake = FixedRandom(negate, index or 0)
                    monkeypatch.setattr(timm_aa, "random", fake)
                    op = timm_aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=dict(hparams))
                    ours = T.augment_op(img, name, magnitude, hparams, negate, resample)
                    if name.startswith("Posterize") and op.level_fn(magnitude, {})[0] == 0:
                        # Pillow 13 rejects posterize(bits=0), so timm raises here; we keep the
                        # all-black result that Pillow < 13 gave (TF's posterize to 0 bits).
                        with pytest.raises(ValueError, match="bits must be"):
                            op(img)
                        assert not pixels(ours).any()
                        continue
                    theirs = op(img)
                    # our sign / resample bookkeeping matches where timm actually draws them
                    assert fake.calls["random"] == (name in T._SIGNED_OPS), fake.calls
                    assert fake.calls["choice"] == (name in T._GEOMETRIC_OPS and not fixed), fake.calls
                    diff = record("transforms RandAugment ops (grey levels)", max_diff(pixels(ours), pixels(theirs)))
                    assert diff == 0, (name, hp_index, magnitude, negate, resample)


# ---------------------------------------------------------------- 4. RandAugment parsing and statistics

CONFIGS = ["rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5", "rand-m7-n3", "rand-m9-n3-mstd0.5", "rand-mstd1-tweights",
           "rand-m9-mstd101-inc1-mmax15-p0.7", "rand-m10-t3a", "rand-m9-t3aw-n3", "rand-m6-mstd0-inc0-foo",
           "rand-m9-mstd0.5-inc1-tbogus"]
AA_HPARAMS = dict(translate_const=int(224 * 0.45),  # create_transform's aa_params for 224 px, default mean
                  img_mean=tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("interpolation", [None, Image.Resampling.BICUBIC])
def test_rand_augment_config_parsing(config, interpolation):
    hparams = dict(AA_HPARAMS, **({} if interpolation is None else {"interpolation": interpolation}))
    ours = T.RandAugment.from_config(config, hparams)
    theirs = timm_aa.rand_augment_transform(config, dict(hparams))
    assert list(ours.ops) == [op.name for op in theirs.ops]
    assert ours.num_layers == theirs.num_layers
    for op in theirs.ops:
        assert (op.prob, op.magnitude, op.magnitude_std, op.magnitude_max) == (
            ours.prob, ours.magnitude, ours.magnitude_std, ours.magnitude_max)
        assert op.hparams == dict(ours.hparams)
        assert op.kwargs["fillcolor"] == ours.hparams["img_mean"]
    if theirs.choice_weights is None:
        assert ours.choice_weights is None
    else:
        np.testing.assert_array_equal(np.asarray(ours.choice_weights), theirs.choice_weights)
    assert pickle.loads(pickle.dumps(ours)) == ours
    # an empty hparams means timm's defaults on both sides
    default = timm_aa.rand_augment_transform(config, {})
    assert T.RandAugment.from_config(config, {}).hparams == default.ops[0].hparams


def _timm_rand_augment_draws(config: str, hparams: dict, images: int, seed: int):
    """Run timm's RandAugment with its image ops stubbed out, recording every choice it makes."""
    ra = timm_aa.rand_augment_transform(config, dict(hparams))
    py_random, np_random = random.Random(seed), np.random.RandomState(seed)
    log = SimpleNamespace(chosen=[], applied=[], magnitudes=[], negated=[], resample=[])
    for op in ra.ops:
        level_fn = op.level_fn

        def record_level(magnitude, hp, _name=op.name, _fn=level_fn):
            log.applied.append(_name)
            log.magnitudes.append(magnitude)
            return _fn(magnitude, hp) if _fn is not None else ()

        def record_op(img, *args, _name=op.name, **kwargs):
            if _name in GEOMETRIC:
                timm_aa._check_args_tf(kwargs)
                log.resample.append(int(kwargs["resample"]))
            return img

        op.level_fn, op.aug_fn = record_level, record_op

    def negate(v, _original=timm_aa._randomly_negate):
        out = _original(v)
        log.negated.append(math.copysign(1.0, out) != math.copysign(1.0, v))  # exact for v == 0 too
        return out

    def choice(a, size=None, replace=True, p=None):
        picked = np_random.choice(a, size, replace=replace, p=p)
        log.chosen.extend(o.name for o in picked)
        return picked

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timm_aa, "random", py_random)
        mp.setattr(np.random, "choice", choice)
        mp.setattr(timm_aa, "_randomly_negate", negate)
        for _ in range(images):
            ra(None)
    return ra, log


def _chi2_same(counts_a: list, counts_b: list) -> float:
    """p-value of a chi-square test that two count vectors come from one distribution."""
    table = np.array([counts_a, counts_b], np.float64)
    table = table[:, table.sum(0) > 0]
    return float(stats.chi2_contingency(table)[1])


@pytest.mark.parametrize("config", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-mstd101-p0.7"])
def test_rand_augment_statistics(record, config):
    images = 4000
    ra_timm, log = _timm_rand_augment_draws(config, AA_HPARAMS, images, seed=0)
    ours = T.RandAugment.from_config(config, AA_HPARAMS)
    rng = np.random.default_rng(0)
    layers = [layer for _ in range(images) for layer in ours.draw(rng)]
    assert len(layers) == len(log.chosen) == images * ra_timm.num_layers
    names = list(ours.ops)

    p_ops = _chi2_same([sum(n == op for n, *_ in layers) for op in names], [log.chosen.count(op) for op in names])
    applied = [layer for layer in layers if layer[1]]
    p_applied = _chi2_same([len(applied), len(layers) - len(applied)],
                           [len(log.applied), len(log.chosen) - len(log.applied)])
    ours_mag = np.array([layer[2] for layer in applied])
    timm_mag = np.array(log.magnitudes, np.float64)
    p_mag = float(stats.ks_2samp(ours_mag, timm_mag).pvalue)
    p_mean = float(stats.ttest_ind(ours_mag, timm_mag, equal_var=False).pvalue)  # Welch
    p_var = float(stats.levene(ours_mag, timm_mag).pvalue)
    signed = [layer[3] for layer in applied if layer[0] in T._SIGNED_OPS]
    p_sign = _chi2_same([sum(signed), len(signed) - sum(signed)],
                        [sum(log.negated), len(log.negated) - sum(log.negated)])
    ours_rs = [layer[4] for layer in applied if layer[0] in GEOMETRIC]
    bil = int(Image.Resampling.BILINEAR)
    p_rs = _chi2_same([ours_rs.count(bil), len(ours_rs) - ours_rs.count(bil)],
                      [log.resample.count(bil), len(log.resample) - log.resample.count(bil)])
    for label, p in [("ops", p_ops), ("applied", p_applied), ("magnitude KS", p_mag), ("magnitude mean", p_mean),
                     ("magnitude spread", p_var), ("sign", p_sign), ("resample", p_rs)]:
        record(f"transforms RandAugment {label} 1-p ({config})", 1 - p)
        assert p > 1e-3, (label, p)
    assert ours_mag.min() >= 0 and ours_mag.max() <= (ours.magnitude_max or 10)
    # magnitudes of skipped layers carry no draw
    assert all(layer[2] == ours.magnitude for layer in layers if not layer[1])


def test_rand_augment_call_is_draw_then_apply():
    img = make_image(64, 80, seed=11)
    ra = T.RandAugment.from_config("rand-m9-mstd0.5-inc1", AA_HPARAMS)
    for seed in range(10):
        out = ra(img, np.random.default_rng(seed))
        layers = ra.draw(np.random.default_rng(seed))
        expected = img
        for name, applied, magnitude, negate, resample in layers:
            if applied:
                expected = T.augment_op(expected, name, magnitude, AA_HPARAMS, negate, resample)
        np.testing.assert_array_equal(pixels(out), pixels(expected))


# ---------------------------------------------------------------- 5. random erasing

ERASE_CASES = [
    # (chan, height, width, probability, min_area, max_area, min_aspect)
    (3, 40, 56, 0.5, 0.02, 1 / 3, 0.3),  # probability misses and hits
    (3, 224, 224, 1.0, 0.02, 1 / 3, 0.3),
    (3, 4, 300, 1.0, 0.02, 1 / 3, 0.3),  # thin: attempts fail, sometimes all ten
    (3, 30, 30, 1.0, 0.6, 0.99, 0.3),  # large areas: many failed attempts
]


@pytest.mark.parametrize("chan,height,width,probability,min_area,max_area,min_aspect", ERASE_CASES)
def test_erasing_box(monkeypatch, chan, height, width, probability, min_area, max_area, min_aspect):
    """timm's box is read back from a NaN fill; the counts check that misses and failures occur."""
    monkeypatch.setattr(timm_re, "_get_pixels", lambda per_pixel, rand_color, size, dtype, device:
                        torch.full(size, float("nan"), dtype=dtype))
    eraser = timm_re.RandomErasing(probability, min_area=min_area, max_area=max_area, min_aspect=min_aspect,
                                   mode="pixel", max_count=1, device="cpu")
    empty = 0
    for seed in range(300):
        box = T.erasing_box(height, width, probability, np.random.default_rng(seed), min_area, max_area, min_aspect)
        assert box.dtype == np.int32 and box.shape == (4,)
        monkeypatch.setattr(timm_re, "random", ScriptedRandom(np.random.default_rng(seed)))
        nan = torch.isnan(eraser(torch.zeros(chan, height, width)))[0].numpy()
        if nan.any():
            rows, cols = np.flatnonzero(nan.any(1)), np.flatnonzero(nan.any(0))
            assert box.tolist() == [rows[0], rows[-1] + 1, cols[0], cols[-1] + 1], seed
            assert nan[box[0]:box[1], box[2]:box[3]].all()
        else:
            assert box.tolist() == [0, 0, 0, 0], seed
            empty += 1
    if probability < 1 or height < 10 or min_area > 0.5:
        assert 0 < empty < 300, empty  # misses (probability) or ten failed attempts
    else:
        assert empty == 0


def test_apply_erasing_equals_timm(monkeypatch, record):
    rng = np.random.default_rng(0)
    captured, original = [], timm_re._get_pixels

    def capture(*args, **kwargs):
        captured.append(original(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(timm_re, "_get_pixels", capture)
    for seed in range(20):
        image = T.normalize(np.asarray(make_image(48, 64, seed=seed)))
        box = T.erasing_box(48, 64, 0.8, np.random.default_rng(seed))
        captured.clear()
        monkeypatch.setattr(timm_re, "random", ScriptedRandom(np.random.default_rng(seed)))
        eraser = timm_re.RandomErasing(0.8, mode="pixel", max_count=1, device="cpu")
        theirs = eraser(torch.from_numpy(image.transpose(2, 0, 1).copy())).permute(1, 2, 0).numpy()
        noise = rng.standard_normal(image.shape).astype(np.float32)
        if captured:
            top, bottom, left, right = box
            noise[top:bottom, left:right] = captured[0].permute(1, 2, 0).numpy()
        else:
            assert box.tolist() == [0, 0, 0, 0]
        ours = T.apply_erasing(image, box, noise)
        diff = record("transforms erasing (normalised)", max_diff(ours, theirs))
        assert diff == 0
        assert (ours != image).any() == bool(captured)


# ---------------------------------------------------------------- 6. evaluation transform

EVAL_IMAGES = [(375, 500), (500, 375), (101, 77), (29, 37), (224, 224)]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(224, 224), (160, 192), (192, 160), (96, 128)])
def test_eval_transform(record, size, interpolation):
    for mean, std in [(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]:
        for crop_pct in (0.875, 0.9, 0.95, 1.0):
            kwargs = dict(input_size=(3, *size), is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                          mean=mean, std=std)
            tf_float, tf_uint8 = create_transform(**kwargs), create_transform(**kwargs, use_prefetcher=True)
            for n, (h, w) in enumerate(EVAL_IMAGES):
                img = make_image(h, w, seed=n)
                ours = T.eval_transform(img, size, crop_pct, interpolation)
                assert ours.dtype == np.uint8 and ours.shape == (*size, 3)
                np.testing.assert_array_equal(ours, tf_uint8(img).permute(1, 2, 0).numpy())
                theirs = tf_float(img).permute(1, 2, 0).numpy()
                diff = record("transforms eval normalised", max_diff(T.normalize(ours, mean, std), theirs))
                assert diff <= 1e-6


def test_center_crop_pads_like_torchvision():
    for h, w in [(20, 30), (31, 17), (50, 50), (9, 8)]:
        img = make_image(h, w)
        for size in [(24, 24), (33, 21), (10, 40), (8, 9)]:
            np.testing.assert_array_equal(np.asarray(T.center_crop(img, size)), np.asarray(TF.center_crop(img, size)))


# ---------------------------------------------------------------- 7. whole training transform

TRAIN_CASES = [
    dict(auto_augment="rand-m9-mstd0.5-inc1", interpolation="random", re_prob=0.25),
    dict(auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25),
    dict(auto_augment="rand-m7-n3", interpolation="bilinear", re_prob=0.0, hflip=0.0),
    dict(auto_augment="rand-m9-mstd0.5", interpolation="bicubic", force_color_jitter=True, color_jitter=0.3),
    dict(color_jitter=0.4, interpolation="random", re_prob=0.5),
    dict(color_jitter=(0.4, 0.3, 0.2, 0.1), interpolation="bicubic", scale=(0.3, 1.0), ratio=(0.5, 2.0)),
]


@pytest.mark.parametrize("case", range(len(TRAIN_CASES)))
def test_train_transform_matches_timm_pipeline(monkeypatch, record, case):
    """Whole timm create_transform(is_training=True) pipeline with every draw scripted: same uint8
    pixels, and timm's RandomErasing (run after it on the same stream) erases our box."""
    kwargs = dict(TRAIN_CASES[case])
    size = (112, 144)
    ours_tf = T.TrainTransform(img_size=size, **kwargs)
    re_prob = kwargs.pop("re_prob", 0.0)
    # create_transform has no force_color_jitter argument; transforms_imagenet_train (which it calls) has
    timm_tf_pipeline = transforms_imagenet_train(size, use_prefetcher=True, **kwargs)
    eraser = timm_re.RandomErasing(re_prob, mode="pixel", max_count=1, device="cpu") if re_prob else None
    monkeypatch.setattr(timm_re, "_get_pixels", lambda per_pixel, rand_color, size, dtype, device:
                        torch.full(size, float("nan"), dtype=dtype))
    erased = 0
    for seed in range(12):
        img = make_image(150 + 13 * seed, 200 - 7 * seed, seed=seed)
        image, box = ours_tf(img, np.random.default_rng(seed))
        script_everything(monkeypatch, seed)
        theirs = timm_tf_pipeline(img).permute(1, 2, 0).numpy()
        diff = record("transforms TrainTransform pipeline (grey levels)", max_diff(image, theirs))
        assert diff == 0, seed
        if eraser is not None:
            nan = torch.isnan(eraser(torch.zeros(3, *size)))[0].numpy()
            if nan.any():
                rows, cols = np.flatnonzero(nan.any(1)), np.flatnonzero(nan.any(0))
                assert box.tolist() == [rows[0], rows[-1] + 1, cols[0], cols[-1] + 1]
                erased += 1
            else:
                assert box.tolist() == [0, 0, 0, 0]
        else:
            assert box.tolist() == [0, 0, 0, 0]
    assert erased > 0 or not re_prob


def test_train_transform_shape_determinism_pickle():
    tf = T.TrainTransform(img_size=(96, 128), auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5)
    assert tf._rand_augment is not None and tf._jitter is None  # timm disables jitter under RandAugment
    assert tf._rand_augment.hparams == {"translate_const": int(96 * 0.45), "img_mean": (124, 116, 104),
                                        "interpolation": Image.Resampling.BICUBIC, "magnitude_std": 0.5}
    img = make_image(150, 170, seed=1)
    image, box = tf(img, np.random.default_rng(5))
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    assert box.shape == (4,) and box.dtype == np.int32
    again, box_again = tf(img, np.random.default_rng(5))
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(box, box_again)
    other, _ = tf(img, np.random.default_rng(6))
    assert (other != image).any()
    clone = pickle.loads(pickle.dumps(tf))
    assert clone == tf
    cloned, cloned_box = clone(img, np.random.default_rng(5))
    np.testing.assert_array_equal(image, cloned)
    np.testing.assert_array_equal(box, cloned_box)
    boxes = [tf(img, np.random.default_rng(s))[1] for s in range(40)]
    assert any(b.any() for b in boxes) and not all(b.any() for b in boxes)
    with pytest.raises(ValueError):
        T.TrainTransform(img_size=(32, 32), auto_augment="v0")
