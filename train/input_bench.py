"""`swin-jax bench --input`: the training input pipeline (`train.pipeline`) against timm's
`create_loader`, from the same folder of JPEGs, with the same augmentation and the same number
of worker processes, in one run; and, with `--train-overhead`, how much of a training step the
pipeline costs.

What is timed is the whole host pipeline up to images ready for the model: decode, augment and
batch in the workers, hand the batch to the main process, put it on the device and run the
device-side half (`train.task.prepare_images`: uint8 -> normalised float32, random erasing's
noise, drawn in the workers, written into its box), blocked until ready. timm's side is its
prefetching loader (`use_prefetcher=True`, here on the CPU), which normalises and erases in the
main process.

These machines are noisy, so the pipelines are timed in turn, one epoch each per round (swin_jax
and timm at 1 worker, at 2 workers, then again), and the medians are reported, as
`train.bench` does: both the ratio to timm and the scaling with workers compare epochs run
close together. Each epoch holds `skip + batches + tail` batches, and only the `batches` in the
middle are timed. The first `skip` hold worker start-up (grain spawns its workers per iterator;
timm keeps persistent ones) and the pipeline's fill; start-up is reported apart. The last `tail`
come out of buffers that drain at the end of an epoch without new work: timm's prefetcher holds
one batch back and hands it out at once after the last one arrives, which would credit it a
batch it took no time to make. An epoch that ends leaves its workers idle, so the pipelines not
being timed take no CPU from the one that is.

Imported lazily by the CLI: importing swin_jax does not import this module.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np
from swin_jax.arguments import InputError

if TYPE_CHECKING:  # for annotations only: the methods import what they run
    from train.pipeline import Batches

MEAN = (0.485, 0.456, 0.406)  # timm's IMAGENET_DEFAULT_MEAN / STD
STD = (0.229, 0.224, 0.225)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)

# The model of the train-overhead measurement: a two-stage Swin small enough for a CPU step.
TRAIN_MODEL = "swin_tiny_patch4_window7_224"
TRAIN_MODEL_ARGS = dict(embed_dim=48, depths=(2, 2), num_heads=(3, 6), drop_path_rate=0.1)


@dataclass(frozen=True)
class Recipe:
    """One training augmentation, configured alike on both sides."""

    name: str
    color_jitter: Optional[float] = None
    auto_augment: Optional[str] = None
    re_prob: float = 0.0  # random erasing, pixel mode


RECIPES = {
    # RandomResizedCrop (bicubic) + horizontal flip
    "basic": Recipe("basic"),
    # + RandAugment, colour jitter (forced on under RandAugment, on both sides), random erasing
    "full": Recipe("full", color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25),
}


# ----- data


def make_jpeg_folder(root: str | Path, classes: int = 4, per_class: int = 64, size: tuple[int, int] = (500, 375),
                     quality: int = 90, seed: int = 0) -> Path:
    """An ImageFolder tree of synthetic JPEGs (`root/class<i>/img<j>.jpg`, `size` = (width,
    height)): smooth colour fields at two scales plus per-pixel noise, so a 500x375 file at
    quality 90 is ~100 KB, about an average ImageNet training JPEG (plain noise or flat colour
    would make decoding unrealistically slow or fast)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    bicubic = Image.Resampling.BICUBIC
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, bicubic)
            pixels = np.asarray(coarse, np.float32)
            detail = rng.normal(0, 40, (24, 32, 3)).astype(np.float32)
            pixels += np.stack([np.asarray(Image.fromarray(detail[..., k], "F").resize(size, bicubic))
                                for k in range(3)], -1)
            pixels += rng.normal(0, 20, (h, w, 3)).astype(np.float32)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"img{i}.jpg", quality=quality)
    return root


def describe_folder(split: Any) -> dict:
    sizes = [os.path.getsize(f) for f in split.files]
    return {"files": len(sizes), "mean_kib": float(np.mean(sizes)) / 1024}


# ----- the two pipelines


def our_transform(recipe: Recipe, img_size: tuple[int, int]) -> Any:
    from train.transforms import TrainTransform

    return TrainTransform(img_size, scale=SCALE, ratio=RATIO, interpolation="bicubic", hflip=0.5,
                          color_jitter=recipe.color_jitter, force_color_jitter=True,
                          auto_augment=recipe.auto_augment, mean=MEAN, re_prob=recipe.re_prob)


class OurPipeline:
    """train.pipeline as the trainer runs it: grain workers -> `Batches` (the background thread
    that puts batches on the device) -> `prepare_images` (jitted here on its own; the trainer
    fuses it into the step)."""

    framework = "swin_jax"

    def __init__(self, split: Any, recipe: Recipe, img_size: tuple[int, int], batch: int, workers: int,
                 seed: int = 0):
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        from train.task import prepare_images
        from train.pipeline import BatchPlan, to_global
        from train.transforms import erasing_capacity

        self.split, self.workers = split, workers
        self.plan = BatchPlan(len(split), batch, seed, train=True)
        self.transform = our_transform(recipe, img_size)
        self.erase_capacity = erasing_capacity(*img_size) if recipe.re_prob > 0 else 0
        self.next_step = 0
        sharded = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
        self.to_device = lambda host: to_global(host, sharded)  # as the trainer's
        self.prepare = jax.jit(lambda b: prepare_images(b["images"], b.get("erase"), b.get("erase_noise"), MEAN, STD))

    def device_batches(self, count: int) -> "Batches":
        """`count` batches on the device (not prepared), from a fresh grain iterator."""
        from train.pipeline import Batches, host_batches

        start, self.next_step = self.next_step, self.next_step + count
        host = host_batches(self.split, self.plan, self.transform, start, start + count, self.workers,
                            erase_capacity=self.erase_capacity)
        return Batches(host, start, start + count, self.to_device)

    def epoch(self, count: int) -> Iterator[Any]:
        with self.device_batches(count) as batches:
            for step, batch, _ in batches:
                yield self.prepare(batch).block_until_ready()

    def close(self) -> None:
        pass


def patch_timm_posterize() -> None:
    """Pillow 13 rejects `ImageOps.posterize(img, 0)`, which timm's RandAugment calls at
    PosterizeIncreasing magnitude 10 (m9 + mstd noise reaches it), so timm's loader dies on the
    "full" recipe. Make its posterize keep no bits as Pillow < 13 did (an all-black image), the
    same as train.transforms does; the work is one lookup table either way."""
    from PIL import ImageOps
    from timm.data import auto_augment as aa

    if getattr(aa, "_swin_jax_patched", False):
        return

    def posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
        if bits_to_keep >= 8:
            return img
        if bits_to_keep <= 0:
            return img.point([0] * (256 * len(img.getbands()))) if img.mode in ("L", "RGB") else img
        return ImageOps.posterize(img, bits_to_keep)

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        aa.NAME_TO_OP[name] = posterize
    aa._swin_jax_patched = True


def timm_augmentation(recipe: Recipe) -> dict:
    """timm's arguments for `recipe` (create_loader's and transforms_imagenet_train's names)."""
    return dict(scale=SCALE, ratio=RATIO, hflip=0.5, color_jitter=recipe.color_jitter,
                auto_augment=recipe.auto_augment, interpolation="bicubic", mean=MEAN, std=STD)


def timm_transform(recipe: Recipe, img_size: tuple[int, int]) -> Any:
    """timm's training transform for `recipe` as its prefetching loader uses it (up to a uint8
    tensor; normalisation and erasing happen after batching), colour jitter forced on."""
    from timm.data.transforms_factory import transforms_imagenet_train

    patch_timm_posterize()
    return transforms_imagenet_train(img_size, force_color_jitter=True, use_prefetcher=True,
                                     **timm_augmentation(recipe))


class TimmPipeline:
    """timm's `create_loader` over `ImageDataset(folder)` with its prefetcher on the CPU (it
    normalises and erases in the main process, as `prepare_images` does on our side), persistent
    workers, epochs of exactly `epoch_batches` batches (the file list repeated to that length)."""

    framework = "timm"

    def __init__(self, folder: str | Path, recipe: Recipe, img_size: tuple[int, int], batch: int, workers: int,
                 epoch_batches: int):
        import torch
        from timm.data import ImageDataset, create_loader

        patch_timm_posterize()
        dataset = ImageDataset(str(folder))
        samples = dataset.reader.samples
        dataset.reader.samples = [samples[i % len(samples)] for i in range(epoch_batches * batch)]
        self.loader = create_loader(dataset, input_size=(3, *img_size), batch_size=batch, is_training=True,
                                    no_aug=False, re_prob=recipe.re_prob, re_mode="pixel", re_count=1,
                                    num_workers=workers, use_prefetcher=True, device=torch.device("cpu"),
                                    persistent_workers=True, pin_memory=False, **timm_augmentation(recipe))
        self.workers = workers
        # create_loader takes no force_color_jitter (timm drops the jitter under RandAugment):
        # the same transform, rebuilt with it, before any worker starts
        dataset.transform = timm_transform(recipe, img_size)

    def epoch(self, count: int) -> Iterator[Any]:
        if count != len(self.loader):
            raise RuntimeError(f"timm's epochs here hold {len(self.loader)} batches, not {count}")
        with warnings.catch_warnings():
            # torch's DataLoader forks its workers (its default on Linux); JAX warns about any
            # fork of its process, but the workers never touch JAX
            warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
            for images, _ in self.loader:
                yield images

    def close(self) -> None:
        iterator = getattr(self.loader.loader, "_iterator", None)  # the persistent workers
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


# ----- timing


@dataclass
class Round:
    """One epoch: arrival times of its batches, and what came out."""

    first_s: float  # iterator created -> first batch ready
    rate: float  # img/s over the timed batches
    images: int
    shape: tuple[int, ...]
    dtype: str
    main_ms: float  # CPU time per timed image: this process (all its threads)
    workers_ms: float  # and its child processes (the workers)


class CpuClock:
    """CPU seconds used by this process and by its children (the workers), which may exit
    before the epoch ends: each child's time is read at every batch and the last reading kept."""

    def __init__(self) -> None:
        import psutil

        self.me, self.seen = psutil.Process(), {}

    def read(self) -> tuple[float, dict[int, float]]:
        import psutil

        for child in self.me.children(recursive=True):
            try:
                t = child.cpu_times()
                self.seen[child.pid] = t.user + t.system
            except psutil.Error:  # exited meanwhile: keep its last reading
                pass
        t = self.me.cpu_times()
        return t.user + t.system, dict(self.seen)


def time_epoch(epoch: Iterator[Any], batch: int, skip: int, timed: int, tail: int = 0) -> Round:
    """Consume one epoch of `skip + timed + tail` batches; the rate counts the `timed` batches
    after the first `skip` (the clock runs from the arrival of batch `skip - 1` to that of batch
    `skip + timed - 1`; the last `tail` arrive out of drained buffers and are not timed), and so
    does the CPU time."""
    clock = CpuClock()
    start = time.perf_counter()
    arrivals, images, shape, dtype = [], 0, (), ""
    end = skip + timed
    for out in epoch:
        arrivals.append(time.perf_counter())
        if len(arrivals) in (skip, end):
            reading = clock.read()
            if len(arrivals) == skip:
                first_reading = reading
            else:
                last_reading = reading
        elif len(arrivals) < end:
            clock.read()  # keeps the readings of workers that exit before the end
        images += int(out.shape[0])
        shape, dtype = tuple(int(d) for d in out.shape), str(out.dtype).replace("torch.", "")
    if len(arrivals) != end + tail:
        raise RuntimeError(f"an epoch gave {len(arrivals)} batches, expected {end + tail}")
    span = arrivals[end - 1] - arrivals[skip - 1]
    (main0, kids0), (main1, kids1) = first_reading, last_reading
    kids = sum(t - kids0.get(pid, 0.0) for pid, t in kids1.items())
    per_image = 1e3 / (timed * batch)
    return Round(arrivals[0] - start, timed * batch / span, images, shape, dtype, (main1 - main0) * per_image,
                 kids * per_image)


def interleaved(runs: Sequence[Callable[[], Any]], repeats: int, tick: Callable[[], None] = lambda: None
                ) -> list[list[Any]]:
    """`repeats` rounds of every run in turn (A B A B ...), as train.bench.interleaved_times."""
    out: list[list[Any]] = [[] for _ in runs]
    for _ in range(repeats):
        for fn, results in zip(runs, out):
            results.append(fn())
            tick()
    return out


def skip_for(workers: int) -> int:
    """Untimed batches at the start of each epoch: the workers' first batches come together
    (and grain's after its workers start), the steady state after two per worker."""
    return 2 * max(workers, 1)


def tail_for(workers: int) -> int:
    """Untimed batches at the end of each epoch: one round of the workers (timm's prefetcher
    hands out its held-back batch at once after the last; a whole round keeps the timed window in
    the workers' phase, whose batches arrive together)."""
    return max(workers, 1)


@dataclass
class PipelineResult:
    recipe: str
    workers: int
    framework: str  # swin_jax | timm
    batch: int
    img_size: tuple[int, int]
    img_per_s: float = 0.0  # median over the rounds
    rates: tuple[float, ...] = ()  # img/s of each timed round
    startup_s: float = 0.0  # warm-up epoch: iterator created -> first batch (worker start included)
    images: int = 0  # images delivered over all epochs, warm-up included
    batches: int = 0
    batch_shape: tuple[int, ...] = ()
    dtype: str = ""
    main_cpu_ms: float = 0.0  # CPU ms per image in this process (medians over the rounds)
    worker_cpu_ms: float = 0.0  # and in the worker processes


def bench_pipelines(split: Any, folder: str | Path, recipe: Recipe, workers: Sequence[int], batch: int,
                    img_size: tuple[int, int], timed: int, repeats: int, tick: Callable[[], None] = lambda: None
                    ) -> list[PipelineResult]:
    """Ours and timm's pipeline for one recipe at every worker count in `workers`: one warm-up
    epoch each, then `repeats` rounds in which every pipeline runs one epoch in turn (ours and
    timm's at 1 worker, at 2 workers, ...), so that both the ratio to timm and the scaling
    between worker counts compare epochs timed minutes apart at most. Results in the order
    (workers[0], swin_jax), (workers[0], timm), (workers[1], swin_jax), ..."""
    runs, results = [], []  # (pipeline, epoch length, timing function) per result
    try:
        for k in workers:
            skip, tail = skip_for(k), tail_for(k)
            timed_k = -(-timed // max(k, 1)) * max(k, 1)  # whole rounds of the workers
            epoch = skip + timed_k + tail
            for pipe in (OurPipeline(split, recipe, img_size, batch, k),
                         TimmPipeline(folder, recipe, img_size, batch, k, epoch)):
                runs.append((pipe, epoch, lambda p=pipe, e=epoch, s=skip, t=timed_k, a=tail:
                             time_epoch(p.epoch(e), batch, s, t, a)))
        for pipe, epoch, run in runs:  # warm-up: worker start, compilation, first allocations
            warm = run()
            results.append(PipelineResult(recipe.name, pipe.workers, pipe.framework, batch, img_size,
                                          startup_s=warm.first_s, images=warm.images, batches=epoch,
                                          batch_shape=warm.shape, dtype=warm.dtype))
            tick()
        rounds = interleaved([run for _, _, run in runs], repeats, tick)
    finally:
        for pipe, _, _ in runs:
            pipe.close()
    for result, (_, epoch, _), measured in zip(results, runs, rounds):
        result.rates = tuple(r.rate for r in measured)
        result.img_per_s = statistics.median(result.rates)
        result.main_cpu_ms = statistics.median(r.main_ms for r in measured)
        result.worker_cpu_ms = statistics.median(r.workers_ms for r in measured)
        result.images += sum(r.images for r in measured)
        result.batches += epoch * len(measured)
        if any((r.shape, r.dtype) != (result.batch_shape, result.dtype) for r in measured):
            raise RuntimeError(f"{result.framework}: batches changed shape or dtype between epochs")
    return results


def bench_transforms(split: Any, folder: str | Path, recipe: Recipe, img_size: tuple[int, int], images: int,
                     repeats: int) -> dict[str, float]:
    """Decode + augment alone, one image at a time in this process (no batching, no transfer):
    what one worker core can do at most, per side."""
    from timm.data import ImageDataset

    from train.pipeline import BatchPlan, LoadExample

    ours = LoadExample(split, BatchPlan(len(split), 1, 0, train=True), our_transform(recipe, img_size))
    dataset = ImageDataset(str(folder), transform=timm_transform(recipe, img_size))
    count = min(images, len(split), len(dataset))

    def run(fn: Callable[[int], Any]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for i in range(count):
                fn(i)
            return count / (time.perf_counter() - start)
        return timed

    runs = [run(ours), run(dataset.__getitem__)]
    for fn in runs:
        fn()  # warm-up (file cache, lazy imports)
    rates = interleaved(runs, repeats)
    return {"swin_jax": statistics.median(rates[0]), "timm": statistics.median(rates[1])}


# ----- what the pipeline costs a training step


def bench_train_overhead(split: Any, recipe: Recipe, img_size: tuple[int, int], workers: int, batch: int,
                         steps: int, repeats: int, num_classes: int, seed: int = 0,
                         tick: Callable[[], None] = lambda: None) -> dict:
    """Step time of the trainer's jitted `train_step` on a small Swin, fed (a) by the pipeline
    with `workers` workers, through `Batches` as the trainer does, and (b) with one batch
    already on the device, reused; interleaved epochs of `skip + steps` steps. Returns the
    median step times and `overhead` = (a) / (b) - 1, the share of step time lost to input."""
    import jax
    import optax

    import swin_jax
    from train.data import mix_parameters
    from train.classification import ClassificationTask
    from train.config import ClassificationRecipe
    from train.loop import create_train_state, train_step
    from train.optim import make_optimizer

    model = swin_jax.create_model(TRAIN_MODEL, num_classes=num_classes, img_size=img_size, **TRAIN_MODEL_ARGS)
    schedule = optax.constant_schedule(1e-4)
    tx = make_optimizer(schedule, 0.05, 5.0)
    state = [create_train_state(swin_jax.init_params(model, seed), tx, ema=False)]
    task = ClassificationTask(ClassificationRecipe(label_smoothing=0.1))
    fn = jax.jit(lambda s, b, m: train_step(s, b, m, task=task, model=model, tx=tx, schedule=schedule,
                                            key=jax.random.PRNGKey(seed), ema_decay=0.0, accum_steps=1,
                                            mean=MEAN, std=STD),
                 donate_argnums=0, compiler_options=swin_jax.compiler_options(model))
    pipe = OurPipeline(split, recipe, img_size, batch, workers, seed)
    # untimed steps per epoch: the first waits for the workers to start; a step takes far longer
    # than a batch, so the pipeline is in its steady state from the second on
    skip = 2
    with pipe.device_batches(1) as first:
        _, fixed, _ = next(first)
    mix = lambda step: mix_parameters(step, seed, img_size, 0.8, 1.0, 0.5)  # the Swin recipe's, drawn per step
    compile_start = time.perf_counter()
    step_fn = fn.lower(state[0], fixed, mix(0)).compile()
    compile_s = time.perf_counter() - compile_start

    def run(batches: Iterator[tuple[int, Any]]) -> float:
        ends = []
        for step, device_batch in batches:
            state[0], metrics = step_fn(state[0], device_batch, mix(step))
            float(metrics["loss"])  # the trainer reads the loss every step
            ends.append(time.perf_counter())
        return (ends[-1] - ends[skip - 1]) / steps

    def from_pipeline() -> float:
        with pipe.device_batches(skip + steps) as batches:
            return run((step, b) for step, b, _ in batches)

    def in_memory() -> float:
        return run((step, fixed) for step in range(skip + steps))

    for warm in (from_pipeline, in_memory):
        warm()
        tick()
    pipeline_s, memory_s = interleaved([from_pipeline, in_memory], repeats, tick)
    a, b = statistics.median(pipeline_s), statistics.median(memory_s)
    return {"recipe": recipe.name, "workers": workers, "batch": batch, "img_size": list(img_size),
            "model": TRAIN_MODEL, "model_args": {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in TRAIN_MODEL_ARGS.items()},
            "steps": steps, "compile_s": compile_s, "pipeline_step_s": a, "in_memory_step_s": b,
            "pipeline_step_times_s": pipeline_s, "in_memory_step_times_s": memory_s, "overhead": a / b - 1}


# ----- the whole run


def run_input_bench(data: Optional[str | Path] = None, workers: Sequence[int] = (1, 2), batch: int = 64,
                    batches: int = 16, img_size: tuple[int, int] = (224, 224),
                    recipes: Sequence[str] = ("basic", "full"), repeats: int = 5, train_overhead: bool = False,
                    train_batch: int = 32, train_steps: int = 6, transform_images: int = 128,
                    log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Measure every recipe x worker count for both pipelines and, with `train_overhead`, the
    step time lost to input (with the last recipe, at every worker count); returns the JSON-able
    report. Without `data`, a temporary folder of 256 synthetic 500x375 JPEGs
    (`make_jpeg_folder`) is made and removed afterwards."""
    import jax
    import timm
    import torch
    from tqdm import tqdm

    import swin_jax
    from train.data import scan_image_folder

    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise InputError(f"unknown recipe(s) {unknown}; choose from {list(RECIPES)}")
    if not workers or min(workers) < 0 or min(batch, batches, repeats, train_batch, train_steps) < 1:
        raise InputError("workers must be >= 0; batch, batches, repeats and train steps >= 1")
    img_size = (int(img_size[0]), int(img_size[1]))
    load_start = os.getloadavg()[0]
    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="swin_jax_input_bench_")
        data = make_jpeg_folder(tmp.name)
        log(f"generated {data}: 4 classes x 64 synthetic 500x375 JPEGs (quality 90)")
    try:
        split, classes = scan_image_folder(data)
        if len(split) < max(batch, train_batch if train_overhead else 1):
            raise InputError(f"{data} holds {len(split)} images: fewer than one batch of {batch}")
        folder = describe_folder(split)
        log(f"data: {folder['files']} files, {folder['mean_kib']:.0f} KiB on average; batch {batch}, "
            f"{img_size[0]}x{img_size[1]}, {batches} timed batches x {repeats} rounds")
        epochs = 2 * (repeats + 1)  # per recipe and worker count: a warm-up and `repeats` for each side
        bar = tqdm(total=epochs * len(workers) * (len(recipes) + train_overhead), unit="epoch",
                   disable=not progress, leave=False, dynamic_ncols=True)
        results, transforms, overhead = [], {}, []

        def say(message: str) -> None:  # a log line above the progress bar
            with bar.external_write_mode(file=sys.stderr):
                log(message)

        try:
            for name in recipes:
                recipe = RECIPES[name]
                transforms[name] = bench_transforms(split, data, recipe, img_size, transform_images, repeats)
                say(f"  {name:<6} decode + augment alone: swin_jax {transforms[name]['swin_jax']:6.1f}, "
                    f"timm {transforms[name]['timm']:6.1f} img/s (one core)")
                measured = bench_pipelines(split, data, recipe, workers, batch, img_size, batches, repeats,
                                           bar.update)
                results.extend(measured)
                for pair in zip(measured[::2], measured[1::2]):
                    k = pair[0].workers
                    say(f"  {name:<6} {k} worker(s): swin_jax {pair[0].img_per_s:6.1f}, timm "
                        f"{pair[1].img_per_s:6.1f} img/s ({pair[0].img_per_s / pair[1].img_per_s:.2f}x)")
            if train_overhead:
                for k in workers:
                    r = bench_train_overhead(split, RECIPES[recipes[-1]], img_size, k, train_batch, train_steps,
                                             repeats, len(classes), tick=bar.update)
                    overhead.append(r)
                    say(f"  train step, {recipes[-1]}, {k} worker(s): {1e3 * r['pipeline_step_s']:.0f} ms "
                        f"from the pipeline, {1e3 * r['in_memory_step_s']:.0f} ms in memory "
                        f"({100 * r['overhead']:+.1f}%)")
        finally:
            bar.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "kind": "input",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "device": str(jax.devices()[0]),
                    # others' processes on the machine: the 1-minute load average before and after
                    "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "swin_jax": swin_jax.__version__, "grain": _version("grain"), "pillow": _version("pillow")},
        "settings": {"data": "generated" if tmp is not None else str(data), **folder, "batch": batch,
                     "img_size": list(img_size), "timed_batches": batches, "repeats": repeats,
                     "recipes": {n: asdict(RECIPES[n]) for n in recipes}, "workers": list(workers)},
        "transform_only": transforms,
        "results": [asdict(r) for r in results],
        "scaling": scaling(results),
        "train_overhead": overhead,
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def scaling(results: Sequence[PipelineResult]) -> dict:
    """img/s at 2 workers / img/s at 1 worker, per recipe and side (where both were measured)."""
    out: dict = {}
    for r in results:
        if r.workers == 2:
            one = next((o for o in results if (o.recipe, o.framework, o.workers) == (r.recipe, r.framework, 1)), None)
            if one is not None and one.img_per_s:
                out.setdefault(r.recipe, {})[r.framework] = r.img_per_s / one.img_per_s
    return out


def paired_ratios(rows: Sequence[dict]) -> dict[str, dict[int, float]]:
    """Per recipe and worker count, the median over rounds of swin_jax's rate / timm's in the
    same round: the two ran minutes apart at most, so a slow spell of the machine that spans a
    round cancels (the ratio of the medians compares epochs from different rounds)."""
    out: dict = {}
    for ours in (r for r in rows if r["framework"] == "swin_jax"):
        theirs = next((r for r in rows if r["framework"] == "timm" and (r["recipe"], r["workers"]) ==
                       (ours["recipe"], ours["workers"])), None)
        if theirs is not None and len(ours["rates"]) == len(theirs["rates"]) > 0:
            out.setdefault(ours["recipe"], {})[ours["workers"]] = statistics.median(
                a / b for a, b in zip(ours["rates"], theirs["rates"]))
    return out


def table(report: dict, markdown: bool = False) -> str:
    """The results as a text (or markdown) table, swin_jax / timm ratios, then the scaling and
    the train overhead."""
    rows = report["results"]
    head = ["recipe", "workers", "swin_jax img/s", "timm img/s", "ratio", "swin_jax img/s/worker",
            "timm img/s/worker", "swin_jax CPU ms/img", "timm CPU ms/img", "start-up s"]
    body = []
    for ours in (r for r in rows if r["framework"] == "swin_jax"):
        theirs = next(r for r in rows if r["framework"] == "timm" and (r["recipe"], r["workers"]) ==
                      (ours["recipe"], ours["workers"]))
        per = max(ours["workers"], 1)  # 0 workers: the main process does it all
        cpu = lambda r: f"{r['main_cpu_ms']:.2f} + {r['worker_cpu_ms']:.2f}"  # main process + workers
        body.append([ours["recipe"], str(ours["workers"]), f"{ours['img_per_s']:.1f}", f"{theirs['img_per_s']:.1f}",
                     f"{ours['img_per_s'] / theirs['img_per_s']:.2f}", f"{ours['img_per_s'] / per:.1f}",
                     f"{theirs['img_per_s'] / per:.1f}", cpu(ours), cpu(theirs),
                     f"{ours['startup_s']:.1f} / {theirs['startup_s']:.1f}"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [8, 8, 16, 12, 7, 22, 18, 21, 17, 12]
        fmt = lambda row: "".join(c.ljust(w) if i < 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        lines = [fmt(head)] + [fmt(row) for row in body]
    notes = ["CPU ms/img: CPU time per image in the main process + in the workers, over the timed batches; "
             "start-up s: swin_jax / timm, first batch of the first epoch (worker start included)"]
    for name, ratios in paired_ratios(rows).items():
        notes.append(f"ratio per round, {name} (swin_jax / timm in the same round; median): " +
                     ", ".join(f"{k} worker(s) {r:.2f}" for k, r in ratios.items()))
    for name, sides in report.get("scaling", {}).items():
        notes.append(f"scaling {name}, 2 workers / 1 worker: swin_jax {sides.get('swin_jax', float('nan')):.2f}x, "
                     f"timm {sides.get('timm', float('nan')):.2f}x")
    for name, sides in report.get("transform_only", {}).items():
        notes.append(f"decode + augment alone, one core, {name}: swin_jax {sides['swin_jax']:.1f}, "
                     f"timm {sides['timm']:.1f} img/s")
    runs = report.get("train_overhead", [])
    if runs:
        r = runs[0]
        args = ", ".join(f"{k} {tuple(v) if isinstance(v, list) else v}" for k, v in r["model_args"].items())
        notes.append(f"train step: {r['model']} with {args}, batch {r['batch']}, {r['img_size'][0]}x"
                     f"{r['img_size'][1]}, the trainer's jitted train_step, recipe {r['recipe']}")
    for r in runs:
        notes.append(f"train step, {r['workers']} worker(s): {1e3 * r['pipeline_step_s']:.0f} ms fed by the pipeline, "
                     f"{1e3 * r['in_memory_step_s']:.0f} ms from one batch in memory: {100 * r['overhead']:+.1f}% "
                     f"of step time lost to input")
    prefix = "- " if markdown else ""
    return "\n".join(lines + [""] + [prefix + n for n in notes])


def write_json(report: dict, path: str | Path) -> Path:
    """The report as JSON, written atomically."""
    from swin_jax.checkpoint_io import write_atomic

    return write_atomic(path, lambda f: f.write(json.dumps(report, indent=1).encode()))
