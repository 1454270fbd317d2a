"""The input pipeline: grain over a random-access source, decoding and augmentation in worker
processes, batches put on the devices ahead of the step.

What fills each slot of each batch is a pure function of (seed, step, position in the global
batch): the epoch order is a permutation seeded by (seed, epoch), and every random choice of an
image's augmentation comes from a generator seeded by (seed, 1, step, position). So the batches
do not depend on the worker count or on how many processes share the global batch, and a run
resumed at step s sees exactly the batches an uninterrupted run sees from s on.

Images leave the workers as uint8 (4x less to move than float32) and are normalised on the
device (`train.task.prepare_images`), as timm's prefetching loader does on the GPU. Random
erasing's box and its noise are drawn in the workers (only the box's values, in a flat buffer);
the device writes them into the normalised image.
"""
from __future__ import annotations

import functools
import gc
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from train.data import ArraySplit, FileSplit, shift_image
from swin_jax.arguments import InputError

ON_BAD_IMAGE = ("error", "skip")
MAX_SKIPS = 64  # unreadable files in a row before a skip becomes an error


def default_workers() -> int:
    """The CPUs this process may use, minus one for the training process; at least 0."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cpus - 1, 0)


class BadImageError(InputError):
    """A file in the data folder cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason} (use --on-bad-image skip to skip such files)")
        self.path, self.reason = path, reason

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised in the trainer
        return BadImageError, (self.path, self.reason)


# ----- which example and which seed fill each slot


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The example order of one training epoch (cached: every slot of an epoch asks for it)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass(frozen=True)
class BatchPlan:
    """The global batches of one split, and this process's share of them.

    Training: `n // batch_size` full batches per epoch in a per-epoch permutation. Evaluation:
    every example once in order, the last batch padded (padding slots have weight 0)."""

    num_examples: int
    batch_size: int  # global, over all processes
    seed: int
    train: bool
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self) -> None:
        if self.batch_size % self.process_count:
            raise InputError(f"batch size {self.batch_size} does not split over {self.process_count} processes")

    @property
    def per_process(self) -> int:
        return self.batch_size // self.process_count

    @property
    def steps_per_epoch(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def position(self, local: int) -> int:
        """Global position of this process's `local`-th slot of a batch."""
        return self.process_index * self.per_process + local

    def example(self, step: int, position: int) -> int:
        """The example at `position` of global batch `step`; -1 for an evaluation padding slot."""
        if self.train:
            epoch, within = divmod(step, self.steps_per_epoch)
            return int(epoch_order(self.seed, epoch, self.num_examples)[within * self.batch_size + position])
        index = step * self.batch_size + position
        return index if index < self.num_examples else -1


# ----- per-example work (runs in the workers)


@dataclass(frozen=True)
class EvalTransform:
    """timm's evaluation transform: shorter side to size / crop_pct, center crop; uint8 out."""

    img_size: tuple[int, int]
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    def __call__(self, img: Any, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        from train.transforms import eval_transform

        return eval_transform(img, self.img_size, self.crop_pct, self.interpolation), NO_ERASE


@dataclass(frozen=True)
class ShiftTransform:
    """In-memory images (digits): a random translation of up to `shift` pixels when training."""

    shift: int = 0

    def __call__(self, image: np.ndarray, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        if rng is not None and self.shift:
            image = shift_image(image, *rng.integers(-self.shift, self.shift + 1, size=2))
        return image, NO_ERASE


NO_ERASE = np.zeros(4, np.int32)  # an empty erasing box [top, bottom, left, right]


def read_image(path: str) -> Any:
    """An RGB PIL image, fully decoded (so a truncated file fails here, not later)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")  # convert would copy an RGB image


@dataclass(frozen=True)
class LoadExample:
    """grain's map function: flat slot index of this process -> one example of a batch.

    The element carries the image, its label, a weight (0 for evaluation padding and skipped
    evaluation images) and the index of a file that could not be read in its place (-1 if
    none); with `erase_capacity` > 0 also the random-erasing box and the generator that draws
    its noise next (`Collate` draws it into the batch; see `train.transforms.erasing_noise`)."""

    split: Union[FileSplit, ArraySplit]
    plan: BatchPlan
    transform: Callable[[Any, Optional[np.random.Generator]], tuple[np.ndarray, np.ndarray]]
    start_step: int = 0
    on_bad_image: str = "error"
    erase_capacity: int = 0  # pixels of the largest erasing box; 0: no erasing

    def __call__(self, slot: int) -> dict[str, np.ndarray]:
        plan = self.plan
        step = self.start_step + slot // plan.per_process
        position = plan.position(slot % plan.per_process)
        index = plan.example(step, position)
        weight = np.float32(1.0)
        padding = index < 0  # evaluation padding of the last batch: a placeholder, weight 0
        if padding:
            index, weight = 0, np.float32(0.0)
        rng = np.random.default_rng([plan.seed, 1, step, position]) if plan.train else None
        if isinstance(self.split, ArraySplit):
            return self.from_array(index, rng, weight)
        skipped = -1
        for attempt in range(0 if padding else MAX_SKIPS + 1):
            path = self.split.files[index]
            try:
                example = self.read(index)
                break
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
                reason = f"{type(err).__name__}: {err}"
                if self.on_bad_image != "skip" or attempt == MAX_SKIPS:
                    raise BadImageError(path, reason) from None
                skipped = index if skipped < 0 else skipped
                if not plan.train:  # evaluation: the slot stays, a placeholder with weight 0
                    example, weight = self.placeholder(index), np.float32(0.0)
                    break
                index = (index + 1) % len(self.split)  # training: the next file takes the slot
        if padding:
            example = self.placeholder(index)
        element = self.transformed(example, index, rng)
        element.update(weight=weight, skipped=np.int32(skipped))
        return element

    # What a task's loader overrides (an image with a mask, say); the slot's bookkeeping above
    # (which example, padding, unreadable files) stays shared.

    def read(self, index: int) -> Any:
        """Example `index` of a file split, fully decoded (a bad file raises here)."""
        return read_image(self.split.files[index])

    def placeholder(self, index: int) -> Any:
        """What stands in a slot with weight 0 (evaluation padding, a skipped evaluation file)."""
        from PIL import Image

        return Image.new("RGB", (64, 64))

    def transformed(self, example: Any, index: int, rng: Optional[np.random.Generator]) -> dict[str, np.ndarray]:
        """The element's arrays (all but weight and skipped) from a read example."""
        image, erase = self.transform(example, rng)
        element = dict(image=image, label=np.int32(self.split.labels[index]))
        if self.erase_capacity:
            element.update(erase=erase, erase_rng=rng)
        return element

    def from_array(self, index: int, rng: Optional[np.random.Generator], weight: np.float32) -> dict[str, np.ndarray]:
        """The element of an in-memory split."""
        image, _ = self.transform(self.split.images[index], rng)
        return dict(image=image, label=np.int32(self.split.labels[index]), weight=weight, skipped=np.int32(-1))


# Set in each grain worker (by `_in_worker`): batches are then built straight in shared memory.
_IN_WORKER = False
SHM_MIN_BYTES = 64 * 1024  # smaller arrays travel pickled (a shared-memory segment costs more)


def _batch_array(shape: tuple, dtype: Any) -> np.ndarray:
    """A batch array of zeros. In a grain worker a large one lives in shared memory, so grain
    hands it to the training process by name instead of copying the finished batch into a new
    segment (a copy of ~10 MB per batch of 64 at 224x224). Both start as untouched zero pages
    (a fresh shared-memory segment reads as zeros; np.zeros maps zero pages): what the batch
    never writes costs the worker nothing."""
    if _IN_WORKER and int(np.prod(shape)) * np.dtype(dtype).itemsize >= SHM_MIN_BYTES:
        from grain.multiprocessing import SharedMemoryArray

        return SharedMemoryArray(shape, dtype)  # a new segment: zeros
    return np.zeros(shape, dtype)


@dataclass(frozen=True)
class Collate:
    """grain's batch function: stack the fixed-size arrays of the elements; draw each image's
    erasing noise (only its box's values, with the element's generator) straight into the
    start of its row of a [B, capacity * C] float32 array, zeros after, so the device batch has
    one shape whatever the boxes. The zeros are the buffer's untouched pages: with a quarter of
    the images erased and boxes of 2-33% of the image, most of the 13 MB (64 images at 224) is
    never written."""

    erase_capacity: int = 0

    def __call__(self, elements: Sequence[dict]) -> dict[str, np.ndarray]:
        from train.transforms import erasing_noise

        batch = {}
        for k in elements[0]:
            if k == "erase_rng":
                continue
            first = np.asarray(elements[0][k])
            out = _batch_array((len(elements),) + first.shape, first.dtype)
            batch[k] = np.stack([e[k] for e in elements], out=out)
        if "erase_rng" in elements[0]:
            channels = batch["image"].shape[-1]
            noise = _batch_array((len(elements), self.erase_capacity * channels), np.float32)
            for row, e in zip(noise, elements):
                erasing_noise(e["erase"], channels, e["erase_rng"], out=row)
            batch["erase_noise"] = noise
        return batch


# ----- grain


def _absl_flags_parsed() -> None:
    """grain reads absl flags in its worker machinery; a program that never ran absl's app has
    not parsed them, so mark them parsed with their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _in_worker(worker_index: int, worker_count: int) -> None:
    """grain's worker_init_fn: build batches in shared memory (see `_batch_array`), and end
    this worker when the training process is gone (a trainer killed with kill -9 cannot stop
    its workers, and they would otherwise wait forever)."""
    global _IN_WORKER
    _IN_WORKER = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def host_batches(split: Union[FileSplit, ArraySplit], plan: BatchPlan, transform: Callable, start_step: int,
                 stop_step: int, workers: int, on_bad_image: str = "error", buffer: int = 2,
                 erase_capacity: int = 0, loader: Optional[Callable[..., Any]] = None) -> Any:
    """A grain iterator of this process's batches for steps [start_step, stop_step): numpy dicts
    with `image`, `label`, `weight`, `skipped` (and `erase`, `erase_noise` with an
    `erase_capacity`). `workers` processes decode and augment whole batches (worker k makes
    batches k, k + workers, ...); 0 does it in this process. `loader`: the map function class that
    makes one example (a task's; default `LoadExample`, an image and an integer label)."""
    import grain

    if on_bad_image not in ON_BAD_IMAGE:
        raise InputError(f"on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    fn = (loader or LoadExample)(split, plan, transform, start_step, on_bad_image, erase_capacity)
    slots = max(stop_step - start_step, 0) * plan.per_process
    dataset = grain.MapDataset.range(slots).map(fn).batch(plan.per_process, drop_remainder=True,
                                                          batch_fn=Collate(erase_capacity))
    # no read threads: the workers are the parallelism (threads would fight them for the cores)
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if workers > 0:
        _absl_flags_parsed()
        # arrays below SHM_MIN_BYTES travel pickled, not each in its own shared-memory segment
        iterable = grain.experimental.WithOptionsIterDataset(
            iterable, grain.experimental.DatasetOptions(min_shm_size=SHM_MIN_BYTES))
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                                      per_worker_buffer_size=buffer),
                                        worker_init_fn=_in_worker)
    return iter(iterable)


def source_fingerprint(split: Any) -> str:
    """A short hash of what a split holds (its `fingerprint()`), saved with the iterator state so
    a resume on other data is refused."""
    return split.fingerprint()


# ----- ahead of the step, onto the devices

# names of a host batch's arrays -> names of the device batch (train_step, eval_step); a task's
# other arrays (a mask, say) keep their names
DEVICE_NAMES = dict(image="images", label="labels", weight="weights", erase="erase", erase_noise="erase_noise")
HOST_ONLY = ("skipped",)  # host bookkeeping, never on the devices


def to_global(host: dict, sharding: Any) -> dict:
    """This process's numpy batch -> global arrays split over the devices of every process
    (`jax.make_array_from_process_local_data`); `skipped` stays behind (host bookkeeping)."""
    import jax

    return {DEVICE_NAMES.get(k, k): jax.make_array_from_process_local_data(sharding, v) for k, v in host.items()
            if k not in HOST_ONLY}


@dataclass
class Batches:
    """Device batches for steps [start, stop), built ahead of the step in a background thread:
    while the device runs step s, the thread takes batch s+1 from the grain workers and starts
    its transfer (`to_device`). `next()` returns (step, device arrays, skipped file indices).

    `get_state()` is the iterator state saved with each checkpoint: the next step to be
    consumed and what identifies the data; `check_state` refuses a resume on other data."""

    host: Iterator[dict]
    start: int
    stop: int
    to_device: Callable[[dict], dict]
    identity: dict = field(default_factory=dict)
    ahead: int = 2

    def __post_init__(self) -> None:
        self.next_step = self.start
        self._queue: queue.Queue = queue.Queue(maxsize=self.ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True, name="device-prefetch")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for step in range(self.start, self.stop):
                host = next(self.host)
                skipped = [int(i) for i in host.pop("skipped") if i >= 0]
                if not self._put((step, self.to_device(host), skipped)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> tuple[int, dict, list[int]]:
        if self.next_step >= self.stop:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.next_step = item[0] + 1
        return item

    def get_state(self) -> dict:
        return {"next_step": self.next_step, **self.identity}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        close = getattr(self.host, "close", None)
        if close is not None:
            close()
        while not self._queue.empty():  # batches made ahead and never taken
            self._queue.get_nowait()
        # A batch built in a worker lives in a shared-memory segment until its last array is
        # freed; one held in a reference cycle would outlive the process's exit, and Python's
        # resource tracker then warns of a leaked segment. Free such cycles now.
        gc.collect()

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_state(saved: dict, identity: dict) -> None:
    """Refuse to resume when the data, seed or batch size differ from the checkpoint's."""
    changed = [k for k in identity if k in saved and saved[k] != identity[k]]
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} then, {identity[k]!r} now" for k in changed)
        raise InputError(f"the checkpoint's input pipeline does not match this run ({detail}); "
                         f"resume with the same data, seed and batch size, or start a new --out-dir")
