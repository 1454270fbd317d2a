"""Image classification, the trainer's first task: timm's recipe for Swin and ViT.

Data: scikit-learn's digits (in memory) or an ImageFolder tree. Targets: one-hot with label
smoothing, mixed by mixup / cutmix drawn per step. Loss: soft-target cross-entropy. Evaluation:
summed cross-entropy and correct predictions; accuracy. Export: the timm-layout safetensors,
checked by running them in swin_torch_ref on the test split.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

import swin_jax
from swin_jax.checkpoint_io import write_atomic
from swin_jax.configs import PRETRAINED
from train.config import ClassificationRecipe, TrainConfig
from train.data import ArraySplit, Dataset, load_dataset, mix_parameters
from train.pipeline import BatchPlan, EvalTransform, ShiftTransform, host_batches
from train.task import Inputs, Task, apply_model


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


def image_preparation(cfg: TrainConfig) -> Any:
    """The run's `DataConfig` (interpolation, crop_pct, mean, std): that of the pretrained weights
    `--init` names when they are weights of the trained architecture, else the model's default
    weights'; `--crop-pct` and `--interpolation` override."""
    weights = cfg.init if cfg.init in PRETRAINED and cfg.init.split(".")[0] == cfg.model else cfg.model
    return swin_jax.get_data_config(weights, crop_pct=cfg.recipe.crop_pct, interpolation=cfg.recipe.interpolation)


def initial_params(cfg: TrainConfig, model: Any, log: Callable[[str], None]) -> Any:
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


def plot_curves(rows: list[dict], path: Path, metric: str = "test_acc", title: str = "test accuracy") -> None:
    """Loss and the task's headline metric (a fraction, shown in %) per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [float(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in rows], label="train (smoothed targets)")
    ax_loss.plot(epochs, [float(r["test_loss"]) for r in rows], label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * float(r[metric]) for r in rows], color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="%", title=title)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def torch_accuracy(cfg: TrainConfig, model: Any, weights: Path, data: Dataset, inputs: Inputs) -> Optional[int]:
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


class ClassificationTask(Task):
    """Classification with a swin_jax model: timm's recipe (`ClassificationRecipe`)."""

    name = "classification"
    metric_fields = ("test_loss", "test_acc")
    export_files = ("model.safetensors",)
    recipe: ClassificationRecipe

    def load_data(self, cfg: TrainConfig, img_size: tuple[int, int]) -> Dataset:
        return load_dataset(cfg.data, img_size, cfg.val_split, cfg.seed)

    def build_model(self, cfg: TrainConfig, data: Dataset) -> Any:
        dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.dtype]
        overrides = {**cfg.model_args, "num_classes": data.num_classes, "in_chans": data.in_chans,
                     "drop_path_rate": self.recipe.drop_path, "remat": cfg.remat}
        if cfg.img_size is not None:
            overrides["img_size"] = tuple(cfg.img_size)
        return swin_jax.create_model(cfg.model, dtype=dtype, **overrides)

    def inputs(self, cfg: TrainConfig, data: Dataset) -> Inputs:
        """In-memory data: the random shift. Files: timm's training transform (random resized crop,
        flip, RandAugment or colour jitter, erasing boxes) and timm's evaluation transform, with the
        model's interpolation, crop_pct, mean and std (`--crop-pct`, `--interpolation` override)."""
        r = self.recipe
        if isinstance(data.train, ArraySplit):
            return Inputs(ShiftTransform(r.shift), ShiftTransform(0), (0.0,), (1.0,), erase_capacity=0)
        from train.transforms import TrainTransform, erasing_capacity

        d = image_preparation(cfg)
        auto_augment = None if (r.aa or "none").lower() == "none" else r.aa
        train_tf = TrainTransform(data.img_size, scale=(r.crop_scale, 1.0), interpolation=r.train_interpolation,
                                  hflip=r.hflip, color_jitter=r.color_jitter or None, auto_augment=auto_augment,
                                  mean=d.mean, re_prob=r.reprob)
        return Inputs(train_tf, EvalTransform(data.img_size, d.crop_pct, d.interpolation), d.mean, d.std,
                      erase_capacity=erasing_capacity(*data.img_size) if r.reprob > 0 else 0)

    def variable_shapes(self, model: Any) -> dict:
        return {"params": swin_jax.param_shapes(model)}

    def initial_variables(self, cfg: TrainConfig, model: Any, log: Callable[[str], None]) -> dict:
        return {"params": initial_params(cfg, model, log)}

    def step_inputs(self, cfg: TrainConfig, img_size: tuple[int, int], step: int) -> dict:
        r = self.recipe
        return mix_parameters(step, cfg.seed, img_size, r.mixup, r.cutmix, r.mixup_switch_prob)

    def loss(self, model: Any, variables: dict, batch: dict, step_inputs: dict, rngs: dict) -> tuple[jax.Array, dict]:
        """Soft targets (label smoothing), mixup / cutmix, forward with dropout / drop path,
        soft-target cross-entropy."""
        targets = soft_targets(batch["labels"], model.config.num_classes, self.recipe.label_smoothing)
        images, targets = apply_mix(batch["images"], targets, step_inputs)
        logits, model_state = apply_model(model, variables, images, train=True, rngs=rngs)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean(), model_state

    def eval_sums(self, model: Any, variables: dict, batch: dict) -> dict:
        """Summed cross-entropy and correct predictions over the batch's real (weight 1) images."""
        logits, _ = apply_model(model, variables, batch["images"], train=False)
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
        w = batch["weights"]
        return {"loss_sum": jnp.sum(loss * w), "correct": jnp.sum(correct * w), "count": jnp.sum(w)}

    def summarize(self, totals: dict) -> dict:
        count = float(totals["count"])
        correct = float(totals["correct"])
        return dict(test_loss=float(totals["loss_sum"]) / count, test_acc=correct / count, correct=int(correct),
                    total=int(count))

    def metric_row(self, summary: dict) -> dict:
        return dict(test_loss=f"{summary['test_loss']:.5f}", test_acc=f"{summary['test_acc']:.5f}")

    def describe(self, summary: dict) -> str:
        return f"test loss {summary['test_loss']:.4f}, test accuracy {100 * summary['test_acc']:.2f}%"

    def describe_final(self, summary: dict) -> str:
        return f"JAX test accuracy {100 * summary['test_acc']:.2f}% ({summary['correct']}/{summary['total']})"

    def plot_curves(self, rows: list[dict], path: Path) -> None:
        plot_curves(rows, path)

    def export(self, cfg: TrainConfig, model: Any, variables: dict, data: Dataset, inputs: Inputs,
               out: Path, summary: dict) -> tuple[dict, str]:
        """The timm-layout safetensors, and the test accuracy swin_torch_ref reaches with them."""
        weights = swin_jax.save_checkpoint(model, variables["params"], out / "model.safetensors", "timm")
        torch_correct = torch_accuracy(cfg, model, weights, data, inputs)
        result = dict(weights=str(weights), torch_correct=torch_correct)
        if torch_correct is None:
            return result, f"exported {weights} (torch not installed: PyTorch check skipped)"
        counted, correct = summary["total"], summary["correct"]
        return result, (f"exported {weights}; PyTorch (swin_torch_ref) accuracy "
                        f"{100 * torch_correct / counted:.2f}% ({torch_correct}/{counted}), "
                        f"{abs(torch_correct - correct)} image(s) apart")
