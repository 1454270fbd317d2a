"""Training with optax: `create_train_state`, a pure `train_step` and `eval_step`, jitted once
with data-parallel shardings (batch split over a 'data' mesh axis, state replicated); the loop
only moves data, logs and checkpoints."""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import swin_jax
from swin_jax.arguments import InputError, Terminated, check_address, check_output, rendezvous, run_command
from swin_jax.checkpoint_io import write_atomic
from swin_jax.configs import PRETRAINED
from train.config import TrainConfig
from train.data import ArraySplit, Dataset, load_dataset, mix_parameters
from train.pipeline import (BatchPlan, Batches, EvalTransform, ShiftTransform, check_state, default_workers,
                            host_batches, source_fingerprint, to_global)
from train.optim import layer_decay_scales, lr_schedule, make_optimizer
from train.sharding import DATA_AXIS, bytes_per_device, gather_to_host, put_state, state_shardings


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # batches seen
    params: Any
    opt_state: Any
    ema_params: Any  # {} when EMA is off


def create_train_state(params: Any, tx: optax.GradientTransformation, ema: bool) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.tree.map(jnp.copy, params) if ema else {})


def apply_mix(images: jax.Array, targets: jax.Array, mix: dict) -> tuple[jax.Array, jax.Array]:
    """Mix the batch with its reverse: cutmix inside `mix['box']` or mixup by `mix['lam']`."""
    flipped = images[::-1]
    h, w = images.shape[1:3]
    y0, y1, x0, x1 = mix["box"]
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
    lam = mix["lam"]
    mixed = jnp.where(mix["cutmix"], jnp.where(inside, flipped, images), lam * images + (1 - lam) * flipped)
    return mixed, lam * targets + (1 - lam) * targets[::-1]


def soft_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """One-hot targets with label smoothing as timm's: 1 - s + s/K on the label, s/K elsewhere
    (both values rounded once to float32 from Python floats, as timm's loss does)."""
    off = smoothing / num_classes
    hit = labels[:, None] == jnp.arange(num_classes)[None, :]
    return jnp.where(hit, jnp.float32(1.0 - smoothing + off), jnp.float32(off))


def prepare_images(images: jax.Array, erase: Optional[jax.Array], erase_noise: Optional[jax.Array],
                   mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """The device half of the input pipeline. uint8 images (from files) are normalised as timm's
    ToTensor + Normalize do, `(x / 255 - mean) / std` in float32; float images (in memory) are
    already normalised. With `erase` ([B, 4] boxes top, bottom, left, right; empty when none),
    random erasing in timm's pixel mode: the box is filled with its noise from `erase_noise`
    ([B, capacity * C], the box's values row-major first, drawn in the workers)."""
    if images.dtype == jnp.uint8:
        images = (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    if erase is None:
        return images
    b, h, w, c = images.shape
    top, bottom, left, right = (erase[:, i, None, None, None] for i in range(4))
    rows, cols, chans = (jnp.arange(n).reshape(shape) for n, shape in
                         ((h, (1, h, 1, 1)), (w, (1, 1, w, 1)), (c, (1, 1, 1, c))))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    # where each pixel of the box finds its value in the flat buffer (a gather: only the box's
    # values travel, and drawing a full image of noise on the device would cost more than the step's input)
    index = jnp.where(inside, ((rows - top) * (right - left) + (cols - left)) * c + chans, 0)
    fill = jnp.take_along_axis(erase_noise, index.reshape(b, -1), axis=1).reshape(images.shape)
    return jnp.where(inside, fill.astype(images.dtype), images)


def train_step(state: TrainState, batch: dict, mix: dict, *, model: Any, tx: optax.GradientTransformation,
               schedule: optax.Schedule, key: jax.Array, ema_decay: float, accum_steps: int,
               label_smoothing: float = 0.0, mean: Sequence[float] = (0.0,),
               std: Sequence[float] = (1.0,)) -> tuple[TrainState, dict]:
    """One batch (`images`, integer `labels`, and `erase` / `erase_noise` when random erasing is
    on): images prepared on the device, mixup / cutmix, forward with dropout / drop path,
    soft-target cross-entropy, optimizer update."""
    images = prepare_images(batch["images"], batch.get("erase"), batch.get("erase_noise"), mean, std)
    targets = soft_targets(batch["labels"], model.config.num_classes, label_smoothing)
    images, targets = apply_mix(images, targets, mix)
    dropout_key = jax.random.fold_in(key, state.step)

    def loss_fn(params: Any) -> jax.Array:
        logits = model.apply({"params": params}, images, train=True, rngs={"dropout": dropout_key})
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay > 0:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step // accum_steps)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics


def eval_step(params: Any, batch: dict, *, model: Any, mean: Sequence[float] = (0.0,),
              std: Sequence[float] = (1.0,)) -> dict:
    """Summed cross-entropy and correct predictions over the batch's real (weight 1) images."""
    images = prepare_images(batch["images"], None, None, mean, std)
    logits = model.apply({"params": params}, images).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    w = batch["weights"]
    return {"loss_sum": jnp.sum(loss * w), "correct": jnp.sum(correct * w), "count": jnp.sum(w)}


# ----- set-up helpers


def init_distributed(cfg: TrainConfig) -> None:
    """Join a multi-host run: coordinator, process count and id from the flags or the
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables."""
    address = cfg.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    count = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    index = cfg.process_id if cfg.process_id is not None else int(os.environ.get("JAX_PROCESS_ID", "0"))
    resolved = check_address(address, "--coordinator")  # before the wait: a bad address is no reason to wait
    if not 0 <= index < count:
        raise InputError(f"--process-id {index} is not below --num-processes {count}")
    if jax.config.jax_platforms in (None, "", "cpu") and count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    print(f"process {index} of {count}: joining the run at {address} (waiting up to {cfg.init_timeout} s for "
          f"every process; --init-timeout)", flush=True)
    rendezvous(address, count, index, cfg.init_timeout, resolved=resolved)
    try:
        jax.distributed.initialize(address, num_processes=count, process_id=index,
                                   initialization_timeout=cfg.init_timeout)
    except Exception as err:  # jax's own error is a long C++ status; what failed is the joining
        detail = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise InputError(f"process {index} of {count} could not join the run at {address} within "
                         f"{cfg.init_timeout} s (--init-timeout): {detail[:300]}") from None


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> Any:
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.dtype]
    overrides = {**cfg.model_args, "num_classes": num_classes, "in_chans": in_chans, "drop_path_rate": cfg.drop_path,
                 "remat": cfg.remat}
    if cfg.img_size is not None:
        overrides["img_size"] = tuple(cfg.img_size)
    return swin_jax.create_model(cfg.model, dtype=dtype, **overrides)


def initial_params(cfg: TrainConfig, model: Any, log: Any) -> Any:
    """Fresh params, or those of `cfg.init` (any layout; grids resized; a new head when the
    class count differs)."""
    if not cfg.init:
        return swin_jax.init_params(model, cfg.seed)
    from swin_jax.checkpoint_io import read_checkpoint
    from swin_jax.convert import from_torch, infer_num_classes

    read = read_checkpoint(cfg.init, use_ema=cfg.init_use_ema)
    state, layout = read.state_dict, read.layout
    chosen = f", {read.describe_choice()}" if read.describe_choice() else ""
    classes = infer_num_classes(state, type(model.config), layout)
    source = model.clone(config=dataclasses.replace(model.config, num_classes=classes))
    loaded = dict(from_torch(source, state, layout))
    if classes != model.config.num_classes:
        loaded = swin_jax.fit_head(model, loaded, cfg.seed)
        log(f"init: {cfg.init} ({layout} layout{chosen}, {classes} classes); new {model.config.num_classes}-class head")
    else:
        log(f"init: {cfg.init} ({layout} layout{chosen})")
    return loaded


class MetricsLog:
    """metrics.csv, one row per evaluation; on resume, rows past the restored step are dropped."""

    FIELDS = ["epoch", "step", "train_loss", "test_loss", "test_acc", "lr", "seconds", "img_per_s"]

    def __init__(self, path: Path, resume_step: int, write: bool = True):
        self.path, self.write = path, write  # only one process of a multi-host run writes
        rows = []
        if resume_step and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.rows = rows
        self._write()

    def add(self, **row: Any) -> None:
        self.rows.append({k: row[k] for k in self.FIELDS})
        self._write()

    def _write(self) -> None:
        if not self.write:
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, lambda f: f.write(text.getvalue().encode()))


class StepLog:
    """steps.csv: every step's training loss, learning rate and gradient norm (full precision),
    appended as the run goes; on resume, rows past the restored step are dropped first (and a
    row cut short by a crash)."""

    FIELDS = ["step", "loss", "lr", "grad_norm"]

    def __init__(self, path: Path, resume_step: int, write: bool = True):
        self.file = None
        if not write:  # only one process of a multi-host run writes
            return
        kept = []
        if resume_step and path.exists():
            for line in path.read_text().splitlines()[1:]:
                cells = line.split(",")
                if len(cells) == len(self.FIELDS) and cells[0].isdigit() and int(cells[0]) <= resume_step:
                    kept.append(line + "\n")
        write_atomic(path, lambda f: f.write((",".join(self.FIELDS) + "\n" + "".join(kept)).encode()))
        self.file = path.open("a")

    def add(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        if self.file is not None:
            self.file.write(f"{step},{loss!r},{lr!r},{grad_norm!r}\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [float(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], label="train (smoothed targets)")
    ax_loss.plot(epochs, [float(r["test_loss"]) for r in rows], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * float(r["test_acc"]) for r in rows], color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="%", title="test accuracy")
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def torch_accuracy(cfg: TrainConfig, model: Any, weights: Path, data: Dataset, inputs: "Inputs") -> Optional[int]:
    """Correct test images when the exported timm-layout weights run in swin_torch_ref; None
    without torch."""
    try:
        import torch
        from safetensors.torch import load_file

        import swin_torch_ref
    except ImportError:
        return None
    overrides = {f.name: getattr(model.config, f.name) for f in dataclasses.fields(model.config)}
    ref = swin_torch_ref.create_model(cfg.model, **overrides)
    ref.load_state_dict(load_file(str(weights)), strict=True)
    plan = BatchPlan(len(data.test), 256, cfg.seed, train=False)
    host = host_batches(data.test, plan, inputs.test_transform, 0, plan.steps_per_epoch, 0, cfg.on_bad_image)
    correct = 0
    with torch.no_grad():
        for batch in host:
            images = inputs.normalize(batch["image"])
            pred = ref(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).argmax(-1).numpy()
            correct += int(((pred == batch["label"]) * batch["weight"]).sum())
    return correct


@dataclass(frozen=True)
class Inputs:
    """How a run's images are made: the transforms in the workers, the normalisation on the device."""

    train_transform: Any
    test_transform: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    erase_capacity: int  # > 0: random erasing boxes and noise come with the training batches

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """The host version of `prepare_images` without erasing (for the PyTorch check)."""
        if images.dtype != np.uint8:
            return images
        return ((images.astype(np.float32) / np.float32(255.0) - np.asarray(self.mean, np.float32))
                / np.asarray(self.std, np.float32))


def image_preparation(cfg: TrainConfig) -> Any:
    """The run's `DataConfig` (interpolation, crop_pct, mean, std): that of the pretrained weights
    `--init` names when they are weights of the trained architecture, else the model's default
    weights'; `--crop-pct` and `--interpolation` override."""
    weights = cfg.init if cfg.init in PRETRAINED and cfg.init.split(".")[0] == cfg.model else cfg.model
    return swin_jax.get_data_config(weights, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)


def build_inputs(cfg: TrainConfig, data: Dataset) -> Inputs:
    """In-memory data: the random shift. Files: timm's training transform (random resized crop,
    flip, RandAugment or colour jitter, erasing boxes) and timm's evaluation transform, with the
    model's interpolation, crop_pct, mean and std (`--crop-pct`, `--interpolation` override)."""
    if isinstance(data.train, ArraySplit):
        return Inputs(ShiftTransform(cfg.shift), ShiftTransform(0), (0.0,), (1.0,), erase_capacity=0)
    from train.transforms import TrainTransform, erasing_capacity

    d = image_preparation(cfg)
    train_tf = TrainTransform(data.img_size, scale=(cfg.crop_scale, 1.0), interpolation=cfg.train_interpolation,
                              hflip=cfg.hflip, color_jitter=cfg.color_jitter or None, auto_augment=None if (cfg.aa or "none").lower() == "none" else cfg.aa,
                              mean=d.mean, re_prob=cfg.reprob)
    return Inputs(train_tf, EvalTransform(data.img_size, d.crop_pct, d.interpolation), d.mean, d.std,
                  erase_capacity=erasing_capacity(*data.img_size) if cfg.reprob > 0 else 0)


# ----- the run


def compile_then_trim(fn: Any, *args: Any) -> Any:
    """The jitted `fn` compiled for `args`, with the memory the compiler freed handed back to the
    OS before the program first runs (otherwise its buffers are placed beside that memory and the
    process peak keeps both; see swin_jax.trim_host_memory)."""
    compiled = fn.lower(*args).compile()
    swin_jax.trim_host_memory()
    return compiled


def _drop_closed_loop_callbacks() -> None:
    """When orbax gives up on a damaged checkpoint, tensorstore still completes the reads it had
    started, and each completion calls into orbax's event loop, closed by then (as soon as the
    restore raises, so possibly before its caller sees the error): Python reports each as an
    unraisable RuntimeError, a traceback under the error line. They say nothing about the
    checkpoint; only those are dropped. Installed once, before a restore."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def saved_steps(folder: Path) -> list[int]:
    """The steps of the orbax checkpoints in `folder` (its numbered sub-folders)."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()) if folder.is_dir() else []


RUN_OUTPUTS = ("checkpoints", "metrics.csv", "steps.csv", "curves.png", "config.json", "model.safetensors")


def remove_run_outputs(out: Path) -> None:
    """What a run writes into its folder (`RUN_OUTPUTS`), for --overwrite; other files stay."""
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse, before anything is created, a run that would mix with or lose another's files:
    an `out_dir` holding an earlier run's checkpoints (unless `resume` continues it or `overwrite`
    replaces it), a `resume` with nothing to resume, an export onto the `init` file."""
    out = Path(cfg.out_dir)
    check_output(out, "--out-dir", {}, folder=True)
    if cfg.resume and cfg.overwrite:
        raise InputError("--resume continues the run in --out-dir and --overwrite replaces it: pass one of them")
    steps = saved_steps(out / "checkpoints")
    if cfg.resume and not steps:
        raise InputError(f"--resume: {out / 'checkpoints'} holds no checkpoint to resume from; leave out --resume to "
                         f"start a new run")
    if steps and not (cfg.resume or cfg.overwrite):
        raise InputError(f"--out-dir {out} already holds a run's checkpoints (steps {', '.join(map(str, steps[-3:]))}): "
                         f"pass --resume to continue that run, or --overwrite to replace it")
    if cfg.init and cfg.export:
        check_output(out / "model.safetensors", "the export (--out-dir)", {"--init": cfg.init})


def train(cfg: TrainConfig, log: Any = print) -> dict:
    """Run (or resume) a training job; returns the final metrics."""
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    check_run_folder(cfg)
    init_distributed(cfg)
    main_process = jax.process_index() == 0
    log = log if main_process else (lambda *a, **k: None)
    out = Path(cfg.out_dir).absolute()  # created once the data, model and weights are known to be good

    probe = swin_jax.get_config(cfg.model, **cfg.model_args)
    img_size = tuple(cfg.img_size or probe.img_size)
    data = load_dataset(cfg.data, img_size, cfg.val_split, cfg.seed)
    model = build_model(cfg, data.num_classes, data.in_chans)
    inputs = build_inputs(cfg, data)
    workers = default_workers() if cfg.workers is None else cfg.workers
    train_plan = BatchPlan(len(data.train), cfg.batch_size, cfg.seed, True, jax.process_index(), jax.process_count())
    test_plan = BatchPlan(len(data.test), cfg.batch_size, cfg.seed, False, jax.process_index(), jax.process_count())
    steps_per_epoch = train_plan.steps_per_epoch
    if steps_per_epoch == 0:
        raise InputError(f"{len(data.train)} training images make no batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    opt_steps = max(1, cfg.epochs * steps_per_epoch // cfg.accum_steps)
    schedule = lr_schedule(cfg.lr, cfg.warmup_lr, cfg.min_lr,
                           int(cfg.warmup_epochs * steps_per_epoch / cfg.accum_steps), opt_steps)
    lr_scales = None
    if cfg.layer_decay > 0:
        lr_scales = layer_decay_scales(swin_jax.param_shapes(model), model.config.family, cfg.layer_decay)
        scales = jax.tree.leaves(lr_scales)
        log(f"layer decay {cfg.layer_decay}: {len(set(scales))} layers, learning-rate scales {min(scales):.3g} "
            f"(patch embedding) to {max(scales):.3g} (head)")
    tx = make_optimizer(schedule, cfg.weight_decay, cfg.clip_grad, cfg.accum_steps, lr_scales)

    mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    if cfg.batch_size % jax.device_count():
        raise InputError(f"batch size {cfg.batch_size} does not split over {jax.device_count()} devices")
    params = initial_params(cfg, model, log)
    new_state = functools.partial(create_train_state, tx=tx, ema=cfg.ema_decay > 0)
    placement = state_shardings(jax.eval_shape(new_state, params), mesh, cfg.fsdp)  # where each array lives
    # the optimizer state and EMA are made in place, already split: the whole state never sits on one device
    state = jax.jit(new_state, out_shardings=placement)(put_state(jax.device_get(params), placement.params))
    del params
    if cfg.fsdp:
        held = max(bytes_per_device(state).values())
        total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))
        log(f"fsdp: training state sharded over {jax.device_count()} devices: {held / 2**20:.1f} MiB per device "
            f"of {total / 2**20:.1f} MiB")

    # What the saved iterator state must match on resume (the batches are a function of these).
    identity = dict(seed=cfg.seed, batch_size=cfg.batch_size, train_examples=len(data.train),
                    train_source=source_fingerprint(data.train))
    if cfg.overwrite:  # only now: a run refused for another reason keeps the earlier one
        if main_process:
            remove_run_outputs(out)
        if jax.process_count() > 1:  # no process makes its checkpoint folder while process 0 clears it
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("swin_jax: earlier run removed")
    out.mkdir(parents=True, exist_ok=True)
    manager = ocp.CheckpointManager(out / "checkpoints", options=ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep, enable_async_checkpointing=False, create=True))
    start = 0
    if cfg.resume and manager.latest_step() is None:
        raise InputError(f"--resume: orbax finds no complete checkpoint in {out / 'checkpoints'}")
    if cfg.resume:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        _drop_closed_loop_callbacks()
        try:
            restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        except Exception as err:  # orbax's errors name its internals, not the problem
            step = manager.latest_step()
            raise InputError(f"cannot resume from {out / 'checkpoints' / str(step)}: it does not hold "
                             f"this run's training state and input-pipeline state ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from err
        check_state(restored.data, identity)
        state, start = restored.state, int(restored.data["next_step"])
        if start != int(state.step):
            raise InputError(f"checkpoint {manager.latest_step()}: iterator at step {start}, state at {int(state.step)}")
        log(f"resumed from step {start} (epoch {start / steps_per_epoch:.2f}) in {out / 'checkpoints'}")
    if main_process:
        config_text = json.dumps(dataclasses.asdict(cfg), indent=1, default=str)
        write_atomic(out / "config.json", lambda f: f.write(config_text.encode()))

    key = jax.random.PRNGKey(cfg.seed)
    options = swin_jax.compiler_options(model)
    step_fn = jax.jit(
        lambda s, b, m: train_step(s, b, m, model=model, tx=tx, schedule=schedule, key=key, ema_decay=cfg.ema_decay,
                                   accum_steps=cfg.accum_steps, label_smoothing=cfg.label_smoothing,
                                   mean=inputs.mean, std=inputs.std),
        in_shardings=(placement, sharded, replicated), out_shardings=(placement, replicated), donate_argnums=0,
        compiler_options=options)
    eval_fn = jax.jit(lambda p, b: eval_step(p, b, model=model, mean=inputs.mean, std=inputs.std),
                      in_shardings=(placement.params, sharded), out_shardings=replicated, compiler_options=options)

    def to_device(host: dict) -> dict:
        return to_global(host, sharded)

    skipped_files: dict[str, int] = {}  # unreadable file -> times skipped

    def note_skipped(indices: list[int], split: Any) -> None:
        for path in (split.files[i] for i in indices):
            if path not in skipped_files and main_process:  # each process counts its own share
                bar.write(f"skipped unreadable image {path}")
            skipped_files[path] = skipped_files.get(path, 0) + 1

    compiled_eval: list[Any] = []  # eval_fn, compiled at the first evaluation

    def evaluate(params: Any) -> tuple[float, float, int, int]:
        """(mean loss, accuracy, correct, images counted) over the readable test images."""
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        host = host_batches(data.test, test_plan, inputs.test_transform, 0, test_plan.steps_per_epoch, workers,
                            cfg.on_bad_image)
        with Batches(host, 0, test_plan.steps_per_epoch, to_device) as batches:
            for _, batch, skipped in batches:
                note_skipped(skipped, data.test)
                if not compiled_eval:
                    compiled_eval.append(compile_then_trim(eval_fn, params, batch))
                result = compiled_eval[0](params, batch)
                totals = {k: totals[k] + float(result[k]) for k in totals}
        if totals["count"] == 0:
            raise InputError(f"no readable test image among the {len(data.test)} of the test split")
        count = totals["count"]
        return totals["loss_sum"] / count, totals["correct"] / count, int(totals["correct"]), int(count)

    metrics_log = MetricsLog(out / "metrics.csv", start, write=main_process)
    step_log = StepLog(out / "steps.csv", start, write=main_process)
    bar = tqdm(total=total_steps, initial=start, unit="step", disable=not main_process, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 15.0)  # logs get a line every 15 s
    losses, window_start, seen = [], time.time(), 0
    run_start = time.time()
    host = host_batches(data.train, train_plan, inputs.train_transform, start, total_steps, workers, cfg.on_bad_image,
                        erase_capacity=inputs.erase_capacity)
    batches = Batches(host, start, total_steps, to_device, identity)
    try:
        for step, batch, skipped in batches:
            note_skipped(skipped, data.train)
            mix = mix_parameters(step, cfg.seed, img_size, cfg.mixup, cfg.cutmix, cfg.mixup_switch_prob)
            if step == start:
                step_fn = compile_then_trim(step_fn, state, batch, mix)
            state, metrics = step_fn(state, batch, mix)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                bar.close()
                last = manager.latest_step()
                raise TrainingDiverged(
                    f"loss is {loss} at step {step} (epoch {step // steps_per_epoch}); stopped without saving. "
                    f"Last good checkpoint: {'none' if last is None else f'step {last}'} in {out / 'checkpoints'}; "
                    f"resume from it (--resume) with a lower --lr or a --clip-grad")
            losses.append(loss)
            step_log.add(step + 1, loss, float(metrics["lr"]), float(metrics["grad_norm"]))
            seen += cfg.batch_size
            bar.update(1)
            bar.set_postfix(epoch=step // steps_per_epoch, loss=f"{loss:.4f}", lr=f"{float(metrics['lr']):.2e}",
                            img_s=f"{seen / max(time.time() - window_start, 1e-9):.0f}")
            done = step + 1
            epoch_end = done % steps_per_epoch == 0 or done == total_steps
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or (not cfg.ckpt_every and epoch_end):
                manager.save(done, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                           data=ocp.args.JsonSave(batches.get_state())))
            if epoch_end:
                eval_params = state.ema_params if cfg.ema_decay > 0 else state.params
                test_loss, test_acc, _, _ = evaluate(eval_params)
                epoch = done / steps_per_epoch
                metrics_log.add(epoch=f"{epoch:.3g}", step=done, train_loss=f"{np.mean(losses):.5f}",
                                test_loss=f"{test_loss:.5f}", test_acc=f"{test_acc:.5f}",
                                lr=f"{float(metrics['lr']):.3e}", seconds=f"{time.time() - run_start:.1f}",
                                img_per_s=f"{seen / max(time.time() - window_start, 1e-9):.1f}")
                if main_process:
                    plot_curves(metrics_log.rows, out / "curves.png")
                bar.write(f"epoch {epoch:.3g}: train loss {np.mean(losses):.4f}, test loss {test_loss:.4f}, "
                          f"test accuracy {100 * test_acc:.2f}%") if main_process else None
                losses, window_start, seen = [], time.time(), 0
    except (KeyboardInterrupt, Terminated):  # a preemption, say: say where --resume picks up
        bar.close()
        last = manager.latest_step()
        log(f"stopped by {'SIGTERM' if sys.exc_info()[0] is Terminated else 'Ctrl-C'} at step {batches.next_step}; "
            + (f"the last good checkpoint is step {last} in {out / 'checkpoints'}: --resume continues from it"
               if last is not None else "no checkpoint was saved yet"))
        raise
    finally:
        batches.close()
        step_log.close()
    bar.close()
    if manager.latest_step() != int(state.step):
        manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                              data=ocp.args.JsonSave(batches.get_state())), force=True)
    manager.wait_until_finished()

    final_params = state.ema_params if cfg.ema_decay > 0 else state.params
    test_loss, test_acc, correct, counted = evaluate(final_params)
    result = dict(steps=int(state.step), test_loss=test_loss, test_acc=test_acc, correct=correct,
                  total=counted, seconds=time.time() - run_start, out_dir=str(out),
                  skipped_images=sum(skipped_files.values()))
    summary = (f"done: {int(state.step)} steps ({int(state.step) / steps_per_epoch:.3g} epochs) in "
               f"{result['seconds']:.0f}s; JAX test accuracy {100 * test_acc:.2f}% ({correct}/{counted})")
    if skipped_files:
        summary += f"; {len(skipped_files)} unreadable image file(s) skipped {sum(skipped_files.values())} time(s)"
    if cfg.export:
        final_params = gather_to_host(final_params)  # every process takes part when the params are sharded
    if cfg.export and main_process:
        weights = swin_jax.save_checkpoint(model, final_params, out / "model.safetensors", "timm")
        torch_correct = torch_accuracy(cfg, model, weights, data, inputs)
        result.update(weights=str(weights), torch_correct=torch_correct)
        if torch_correct is None:
            summary += f"; exported {weights} (torch not installed: PyTorch check skipped)"
        else:
            summary += (f"; exported {weights}; PyTorch (swin_torch_ref) accuracy "
                        f"{100 * torch_correct / counted:.2f}% ({torch_correct}/{counted}), "
                        f"{abs(torch_correct - correct)} image(s) apart")
    log(summary)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m train` / `swin-jax train`."""
    from train.config import parse_config

    cfg = parse_config(argv)

    def work() -> int:
        try:
            train(cfg)
        except TrainingDiverged as err:
            print(f"swin-jax train: stopped: {err}", flush=True)
            return 1
        return 0

    return run_command("swin-jax train", work, stream=sys.stdout)  # the run's log is on stdout too
