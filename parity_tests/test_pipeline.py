"""The input pipeline: batches independent of the worker and process counts, resumable at any
step, unreadable files named (skipped or an error), the device half (normalisation, erasing),
bad folders refused, and `swin-jax validate` against timm's validation on the same weights."""
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from train.data import load_image_folder, scan_image_folder
from train.task import prepare_images
from train.pipeline import BadImageError, BatchPlan, Batches, Collate, check_state, host_batches
from train.transforms import (TrainTransform, apply_erasing, erasing_box, erasing_capacity, erasing_noise, normalize,
                              place_erasing_noise)

FULL_RECIPE = dict(auto_augment="rand-m9-mstd0.5-inc1", force_color_jitter=True, re_prob=0.5)


def write_jpeg_folder(root: Path, classes: int = 3, per_class: int = 10, seed: int = 0) -> Path:
    """Small JPEGs of varied sizes and smooth random content, a folder per class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(40, 90, size=2)
            coarse = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
            pixels = np.asarray(Image.fromarray(coarse).resize((int(w), int(h)), Image.BICUBIC), np.float32)
            pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"img{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"))


def _batches(split, steps: range, workers: int, process_index: int = 0, process_count: int = 1,
             on_bad_image: str = "error", batch: int = 8, size: int = 32, raw: bool = False) -> list[dict]:
    plan = BatchPlan(len(split), batch, seed=3, train=True, process_index=process_index, process_count=process_count)
    it = host_batches(split, plan, TrainTransform((size, size), **FULL_RECIPE), steps.start, steps.stop, workers,
                      on_bad_image, erase_capacity=erasing_capacity(size, size))
    try:
        return [{k: v if raw else np.array(v) for k, v in next(it).items()} for _ in steps]
    finally:
        getattr(it, "close", lambda: None)()


def test_batches_do_not_depend_on_workers_processes_or_the_start_step(folder):
    """30 images, batch 8: 3 steps per epoch, so steps 0-6 cross two epoch boundaries. The same
    batches with 0 or 2 worker processes; the two halves of a 2-process run are the 1-process
    batch; a pipeline started at step 4 (a resume) continues with the same batches."""
    split, _ = scan_image_folder(folder)
    steps = range(0, 7)
    reference = _batches(split, steps, workers=0)
    assert reference[0]["image"].shape == (8, 32, 32, 3) and reference[0]["image"].dtype == np.uint8
    assert any(b["erase"].any() for b in reference), "re_prob 0.5 drew no erasing box"
    assert all(b["erase_noise"].shape == (8, erasing_capacity(32, 32) * 3) for b in reference)
    assert not all(np.array_equal(reference[0]["image"], b["image"]) for b in reference[1:])
    with_workers = _batches(split, steps, workers=2)
    halves = [_batches(split, steps, workers=0, process_index=i, process_count=2) for i in range(2)]
    resumed = _batches(split, range(4, 7), workers=1)
    for step in steps:
        for key, value in reference[step].items():
            np.testing.assert_array_equal(with_workers[step][key], value, err_msg=f"2 workers, step {step}, {key}")
            np.testing.assert_array_equal(np.concatenate([halves[0][step][key], halves[1][step][key]]), value,
                                          err_msg=f"2 processes, step {step}, {key}")
            if step >= 4:
                np.testing.assert_array_equal(resumed[step - 4][key], value, err_msg=f"resumed, step {step}, {key}")
    # every image of an epoch exactly once (3 full batches of 8 from 30 images: 24 distinct)
    labels = np.concatenate([b["label"] for b in reference[:3]])
    assert len(labels) == 24


def test_worker_batches_travel_in_shared_memory(folder, monkeypatch):
    """At 96x96 the image and erasing-noise arrays of a batch pass SHM_MIN_BYTES: a worker builds
    them in shared memory and grain hands them over by name (they arrive as SharedMemoryArray),
    the small arrays travel pickled; the values equal the batches built in this process."""
    from grain.multiprocessing import SharedMemoryArray

    from train.pipeline import SHM_MIN_BYTES

    split, _ = scan_image_folder(folder)
    steps = range(0, 3)
    reference = _batches(split, steps, workers=0, size=96)
    received = _batches(split, steps, workers=1, size=96, raw=True)
    for step in steps:
        for key, value in reference[step].items():
            assert isinstance(received[step][key], SharedMemoryArray) == (value.nbytes >= SHM_MIN_BYTES), key
            np.testing.assert_array_equal(np.asarray(received[step][key]), value, err_msg=f"step {step}, {key}")
    assert reference[0]["image"].nbytes >= SHM_MIN_BYTES > reference[0]["label"].nbytes
    # in a worker, Collate stacks straight into shared memory (grain then sends it without a copy)
    monkeypatch.setattr("train.pipeline._IN_WORKER", True)
    elements = [dict(image=np.full((96, 96, 3), i, np.uint8), label=np.int32(i)) for i in range(8)]
    batch = Collate()(elements)
    assert isinstance(batch["image"], SharedMemoryArray) and not isinstance(batch["label"], SharedMemoryArray)
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], np.arange(8))
    batch["image"].unlink_on_del()


def test_evaluation_batches_cover_every_image_once_and_pad(folder):
    split, _ = scan_image_folder(folder)
    plan = BatchPlan(len(split), 8, seed=0, train=False)
    from train.pipeline import EvalTransform

    it = host_batches(split, plan, EvalTransform((32, 32), 0.9, "bicubic"), 0, plan.steps_per_epoch, 0)
    batches = list(it)
    weights = np.concatenate([b["weight"] for b in batches])
    assert len(batches) == 4 and weights.sum() == 30 and (weights[30:] == 0).all()
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:30], split.labels)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> tuple[Path, list[str]]:
    root = write_jpeg_folder(tmp_path_factory.mktemp("bad"), classes=2, per_class=6, seed=1)
    truncated = root / "class0" / "img2.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_an_image = root / "class1" / "img4.jpg"
    not_an_image.write_text("this is not a JPEG")
    return root, [str(truncated), str(not_an_image)]


def test_an_unreadable_image_is_named_through_the_workers(bad_folder):
    root, bad = bad_folder
    split, _ = scan_image_folder(root)
    with pytest.raises(BadImageError, match="cannot read image .*img(2|4).jpg") as info:
        _batches(split, range(0, 3), workers=1, batch=4)
    assert info.value.path in bad
    batches = _batches(split, range(0, 6), workers=1, on_bad_image="skip", batch=4)
    skipped = {split.files[i] for b in batches for i in b["skipped"] if i >= 0}
    assert skipped == set(bad)  # 6 steps of 4 = 2 epochs of 12 images: each file was met
    assert all(b["image"].shape == (4, 32, 32, 3) for b in batches)


def test_evaluation_skips_each_unreadable_image_once(bad_folder):
    """In evaluation a skipped file leaves its slot at weight 0, and the padding of the last
    batch reads no file (so it never reports one)."""
    from train.pipeline import EvalTransform

    root, bad = bad_folder
    split, _ = scan_image_folder(root)
    plan = BatchPlan(len(split), 5, seed=0, train=False)  # 12 images: the last batch holds 3 padding slots
    batches = list(host_batches(split, plan, EvalTransform((32, 32)), 0, plan.steps_per_epoch, 0, "skip"))
    skipped = [split.files[i] for b in batches for i in b["skipped"] if i >= 0]
    assert sorted(skipped) == sorted(bad)
    assert np.concatenate([b["weight"] for b in batches]).sum() == len(split) - len(bad)


def test_fingerprint_follows_the_data_not_its_location(folder, tmp_path):
    import shutil

    from train.pipeline import source_fingerprint

    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "data")
    assert source_fingerprint(scan_image_folder(moved)[0]) == source_fingerprint(scan_image_folder(folder)[0])
    (moved / "class0" / "img0.jpg").rename(moved / "class1" / "extra.jpg")
    assert source_fingerprint(scan_image_folder(moved)[0]) != source_fingerprint(scan_image_folder(folder)[0])


def _train(*args: str) -> subprocess.CompletedProcess:
    """`python -m train` of a tiny Swin for one epoch."""
    small = ["--model-arg=embed_dim=24", "--model-arg=depths=(1,1)", "--model-arg=num_heads=(1,2)",
             "--model-arg=patch_size=4", "--model-arg=window_size=4"]
    return run_cli("train", "--model", "swin_tiny_patch4_window7_224", "--img-size", "32", "32", "--batch-size", "4",
                   "--epochs", "1", "--no-export", *small, *args)


def test_trainer_skips_or_stops_on_an_unreadable_image(bad_folder, tmp_path):
    root, bad = bad_folder
    stopped = _train("--data", str(root), "--out-dir", str(tmp_path / "a"), "--workers", "1")
    assert stopped.returncode == 2, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "swin-jax train: error: cannot read image" in stopped.stdout and "--on-bad-image skip" in stopped.stdout
    assert any(path in stopped.stdout for path in bad)
    skipped = _train("--data", str(root), "--out-dir", str(tmp_path / "b"), "--workers", "1", "--on-bad-image",
                     "skip", "--val-split", "0.5")
    assert skipped.returncode == 0, skipped.stdout[-2000:] + skipped.stderr[-2000:]
    log = skipped.stdout + skipped.stderr
    named = [path for path in bad if f"skipped unreadable image {path}" in log]
    assert named, log[-2000:]
    assert "unreadable image file(s) skipped" in log


def test_bad_folders_are_refused(tmp_path, folder):
    (tmp_path / "empty" / "class0").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        scan_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="no class folders"):
        scan_image_folder(tmp_path / "empty" / "class0")
    with pytest.raises(FileNotFoundError):
        scan_image_folder(tmp_path / "missing")
    split = tmp_path / "split"
    write_jpeg_folder(split / "train", classes=3, per_class=2)
    write_jpeg_folder(split / "val", classes=2, per_class=2)
    with pytest.raises(ValueError, match=r"does not have the training classes: missing \['class2'\]"):
        load_image_folder(split, (32, 32), 0.2, 0)
    result = _train("--data", str(tmp_path / "empty"), "--out-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "swin-jax train: error: no images" in result.stdout, result.stdout[-2000:]


def test_classes_and_files_in_timm_order(tmp_path):
    for name in ["c10", "c2", "c1"]:
        (tmp_path / name).mkdir()
        for f in ["b10.png", "b2.png"]:
            Image.new("RGB", (4, 4)).save(tmp_path / name / f)
    split, classes = scan_image_folder(tmp_path)
    assert classes == ["c1", "c2", "c10"]
    assert [Path(f).name for f in split.files[:2]] == ["b2.png", "b10.png"]


def test_iterator_state_refuses_other_data():
    identity = dict(seed=0, batch_size=8, train_examples=30, train_source="abc")
    check_state({"next_step": 5, **identity}, identity)
    with pytest.raises(ValueError, match="train_source: 'abc' then, 'xyz' now"):
        check_state({"next_step": 5, **identity}, {**identity, "train_source": "xyz"})


def test_device_batches_run_ahead_and_stop(folder):
    split, _ = scan_image_folder(folder)
    plan = BatchPlan(len(split), 8, seed=3, train=True)
    host = host_batches(split, plan, TrainTransform((32, 32)), 2, 5, 0)
    with Batches(host, 2, 5, lambda b: {"images": jax.device_put(b["image"])}, {"seed": 3}) as batches:
        got = [(step, batch["images"].shape) for step, batch, _ in batches]
        assert batches.get_state() == {"next_step": 5, "seed": 3}
    assert got == [(2, (8, 32, 32, 3)), (3, (8, 32, 32, 3)), (4, (8, 32, 32, 3))]


def test_device_half_normalises_and_erases_like_timm(record):
    """`prepare_images` = ToTensor + Normalize (1e-6, as the evaluation transform test) and,
    inside each box, the noise the worker drew for it (only the box's values travel)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 12, 3)).astype(np.uint8)
    capacity = erasing_capacity(16, 12)
    boxes = np.array([[2, 9, 1, 5], [0, 0, 0, 0], [0, 16, 0, 4], [15, 16, 11, 12]], np.int32)
    elements = [dict(image=im, erase=box, erase_rng=np.random.default_rng(10 + p))
                for p, (im, box) in enumerate(zip(images, boxes))]
    noise = Collate(capacity)(elements)["erase_noise"]
    for p, box in enumerate(boxes):  # each element's generator drew its box's values into its row
        drawn = erasing_noise(box, 3, np.random.default_rng(10 + p))
        np.testing.assert_array_equal(noise[p][:len(drawn)], drawn)
        assert (noise[p][len(drawn):] == 0).all()
    with pytest.raises(ValueError, match=r"erasing box \[0, 16, 0, 12\] is larger than its buffer"):
        Collate(3)([dict(image=images[0], erase=np.array([0, 16, 0, 12]), erase_rng=rng)])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plain = np.asarray(prepare_images(images, None, None, mean, std))
    expected = np.stack([normalize(im, mean, std) for im in images])
    assert record("pipeline: device normalisation vs ToTensor+Normalize", np.abs(plain - expected).max()) <= 1e-6
    erased = np.asarray(jax.jit(lambda x, b, n: prepare_images(x, b, n, mean, std))(images, boxes, noise))
    for p, box in enumerate(boxes):
        full = place_erasing_noise(box, noise[p], images.shape[1:])
        np.testing.assert_allclose(erased[p], apply_erasing(expected[p], box, full), atol=1e-6)
    assert not np.allclose(erased[0], expected[0], atol=1e-6) and np.allclose(erased[1], expected[1], atol=1e-6)
    assert (noise[1] == 0).all() and abs(noise[2][:16 * 4 * 3].std() - 1) < 0.3


def test_erasing_capacity_bounds_every_box():
    """The noise buffer holds the largest box timm's RandomErasing can draw (max area 1/3,
    rounding of h and w included), for many draws at several sizes."""
    for height, width in [(224, 224), (32, 32), (17, 40), (384, 256)]:
        capacity = erasing_capacity(height, width)
        rng = np.random.default_rng(height * width)
        largest = max(int(np.prod(np.diff(erasing_box(height, width, 1.0, rng).reshape(2, 2)))) for _ in range(4000))
        assert 0.25 * height * width < largest <= capacity


# ----- swin-jax validate against timm's validation loop


def _timm_predictions(model, folder: Path, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """timm's validate.py: resolve_data_config + create_transform(is_training=False) over an
    ImageDataset; softmax top-5 per image."""
    from timm.data import ImageDataset, create_transform, resolve_data_config

    config = resolve_data_config({"input_size": (3, size, size)}, model=model)
    dataset = ImageDataset(str(folder), transform=create_transform(**config, is_training=False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)
    probs = []
    with torch.no_grad():
        for images, _ in loader:
            probs.append(torch.softmax(model(images), -1))
    probs = torch.cat(probs)
    top_p, top_i = probs.topk(5, -1)
    files = [str(Path(f)) for f, _ in dataset.reader.samples]
    labels = np.array([t for _, t in dataset.reader.samples])
    return files, labels, (top_i.numpy(), top_p.numpy())


@pytest.mark.parametrize("name, args", [
    ("vit_tiny_patch16_224", dict(depth=2, num_classes=6)),
    ("swin_tiny_patch4_window7_224", dict(embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4,
                                          num_classes=6)),
])
def test_validate_equals_timm(name, args, folder, tmp_path, record):
    import timm
    from safetensors.torch import save_file

    import swin_torch_ref
    from train.validate import validate

    size = 64
    theirs = swin_torch_ref.randomize_parameters(
        timm.create_model(name, pretrained=False, img_size=size, **args).eval(), seed=5)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(weights))
    files, labels, (top_i, top_p) = _timm_predictions(theirs, folder, size)
    model_args = {k: v for k, v in args.items() if k != "num_classes"}
    if name.startswith("vit"):  # through the command line, predictions to CSV
        out = tmp_path / "pred.csv"
        cli = run_cli("swin-jax", "validate", name, "--checkpoint", weights, "--data", folder, "--img-size", size, size,
                      "--workers", 1, "--batch-size", 7, "--predictions", out,
                      *[f"--model-arg={k}={v}" for k, v in model_args.items()])
        assert cli.returncode == 0, cli.stderr[-2000:]
        import csv

        with out.open() as f:
            rows = [dict(file=r["file"], label=int(r["label"]), top=[int(c) for c in r["top5"].split()],
                         probs=[float(p) for p in r["probs"].split()]) for r in csv.DictReader(f)]
        top1_line = cli.stdout
    else:
        result = validate(name, weights, folder, batch_size=7, workers=0, img_size=(size, size),
                          model_args=model_args, log=lambda m: None)
        rows, top1_line = result["rows"], f"top-1 {result['top1']:.3f}%"
    assert [r["file"] for r in rows] == files and [r["label"] for r in rows] == list(labels)
    ours_i = np.array([r["top"] for r in rows])
    ours_p = np.array([r["probs"] for r in rows])
    np.testing.assert_array_equal(ours_i, top_i)
    assert record(f"validate: top-5 probabilities vs timm ({name})", np.abs(ours_p - top_p).max()) <= 1e-5
    timm_top1 = 100 * float(np.mean(top_i[:, 0] == labels))
    assert f"top-1 {timm_top1:.3f}%" in top1_line
