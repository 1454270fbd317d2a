"""Training configuration: one frozen dataclass, the command line built from it, and presets."""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from swin_jax.arguments import InputError
from swin_jax.configs import REMAT_CHOICES


@dataclass(frozen=True)
class Recipe:
    """What every task's recipe sets, read by the shared loop: AdamW, its warm-up + cosine
    schedule, clipping, layer decay, and the model's stochastic depth. Defaults: the Swin paper's
    ImageNet-1k values (5e-4 per 512 images)."""

    lr: float = 5e-4
    warmup_lr: float = 5e-7
    min_lr: float = 5e-6
    warmup_epochs: float = 20.0
    weight_decay: float = 0.05
    clip_grad: float = 5.0  # global-norm clip; 0 turns it off
    layer_decay: float = 0.0  # layer-wise LR decay (timm's --layer-decay, e.g. 0.75 to fine-tune); 0 off
    drop_path: float = 0.2


@dataclass(frozen=True)
class ClassificationRecipe(Recipe):
    """The classification task's recipe: the Swin paper's ImageNet-1k one (label smoothing 0.1,
    mixup 0.8 / cutmix 1.0, RandAugment m9, erasing 0.25) with timm's transforms."""

    label_smoothing: float = 0.1
    mixup: float = 0.8  # mixup alpha; 0 off
    cutmix: float = 1.0  # cutmix alpha; 0 off
    mixup_switch_prob: float = 0.5
    crop_scale: float = 0.08  # random resized crop: smallest area fraction (timm's scale=(crop_scale, 1))
    hflip: float = 0.5
    aa: Optional[str] = "rand-m9-mstd0.5-inc1"  # RandAugment as timm's --aa; "" or none turns it off
    color_jitter: float = 0.4  # timm's: used only without --aa (timm turns it off under RandAugment)
    reprob: float = 0.25  # random erasing probability (timm's pixel mode; box and noise drawn in the workers)
    train_interpolation: str = "bicubic"  # of the random resized crop: bicubic, bilinear or random
    crop_pct: Optional[float] = None  # evaluation: resize to size / crop_pct, center crop (default: the model's)
    interpolation: Optional[str] = None  # evaluation resize (default: the model's)
    shift: int = 0  # random translation in pixels (in-memory data: digits)


# The trainer's tasks: name -> (its `train.task.Task` class as "module:class", imported when a run
# needs it; its recipe type). `task_name` says which task a model trains with.
TASKS: dict[str, tuple[str, type]] = {
    "classification": ("train.classification:ClassificationTask", ClassificationRecipe),
}


def task_name(model: str) -> str:
    """The task a registered model trains with: every named model today is a classifier."""
    return "classification"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on: the run's settings (model, data, devices, checkpoints, hosts),
    read by the shared loop, and the task's `recipe` (optimizer, loss, augmentation), read by the
    task. The command line sets both with flat flags (`--lr` goes to the recipe)."""

    model: str = "swin_tiny_patch4_window7_224"
    model_args: dict = field(default_factory=dict)  # overrides of the named config (embed_dim, ...)
    data: str = "digits"  # "digits" (scikit-learn) or an ImageFolder directory
    img_size: Optional[tuple[int, int]] = None  # default: the model's
    val_split: float = 0.2
    epochs: int = 300
    batch_size: int = 512  # global, over all devices and hosts
    accum_steps: int = 1  # gradient accumulation: optimizer step every k batches
    workers: Optional[int] = None  # decoding / augmentation processes; default CPU count - 1; 0: in-process
    on_bad_image: str = "error"  # unreadable image: "error" stops; "skip" reports it and trains on the next file
    remat: str = "none"  # activation remat: none, block (recompute each block in the backward pass) or attention
    fsdp: bool = False  # shard params, gradients and optimizer state over the devices (ZeRO-3); default: replicated
    ema_decay: float = 0.0  # 0 off; e.g. 0.9998 (params only: running statistics are the model's own)
    dtype: str = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    seed: int = 0
    out_dir: str = "runs/train"
    ckpt_every: int = 0  # steps between checkpoints; 0: once per epoch
    keep: int = 3
    resume: bool = False  # continue the run in out_dir from its last checkpoint (there must be one)
    overwrite: bool = False  # replace the checkpoints of an earlier run in out_dir (without it, such a folder is refused)
    init: Optional[str] = None  # checkpoint to fine-tune from: a file in any layout, or architecture.tag / hf-hub:ORG/REPO
    init_use_ema: bool = False  # --init's EMA weights (state_dict_ema / model_ema) instead of its model weights
    max_steps: int = 0  # stop after this many steps (tests, debugging); 0: run all epochs
    export: bool = True  # write the final weights in the task's PyTorch layout and check them in PyTorch
    coordinator: Optional[str] = None  # multi-host: "host:port" of process 0
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    init_timeout: int = 300  # multi-host: seconds to wait for every process to join (jax's initialization_timeout)
    recipe: Recipe = field(default_factory=ClassificationRecipe)  # the model's task's (TASKS[task_name(model)])

    def __post_init__(self) -> None:
        task = task_name(self.model)
        if not isinstance(self.recipe, TASKS[task][1]):
            raise InputError(f"{self.model} trains as {task}, with a {TASKS[task][1].__name__}; "
                             f"got a {type(self.recipe).__name__}")


PRESETS: dict[str, dict[str, Any]] = {
    # The default job (`make train`): a small Swin on scikit-learn's digits, upsampled to 32x32.
    "digits": dict(
        model="swin_tiny_patch4_window7_224",
        model_args=dict(embed_dim=48, depths=(2, 2), num_heads=(3, 6), patch_size=2, window_size=4),
        data="digits", img_size=(32, 32), val_split=0.2, epochs=60, batch_size=64, lr=2e-3, warmup_lr=2e-4,
        min_lr=1e-5, warmup_epochs=6.0, weight_decay=0.05, clip_grad=5.0, label_smoothing=0.1, mixup=0.0,
        cutmix=0.0, crop_scale=1.0, hflip=0.0, shift=2, drop_path=0.1, out_dir="runs/digits",
        workers=0,  # in-memory 32x32 images: a worker process would cost more than it saves
    ),
}


def _family(name: str) -> Optional[str]:
    """Swin or ViT: the kind of a registered model, whose options a preset's model_args name (Swin
    V2 takes Swin's); None for an unknown name (its error comes later)."""
    from swin_jax.configs import MODEL_CONFIGS

    return MODEL_CONFIGS[name][0].family.removesuffix("v2") if name in MODEL_CONFIGS else None


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ranges() -> dict[str, Any]:
    """Each number's argparse type: what values the flag allows (swin_jax.arguments)."""
    from swin_jax.arguments import NON_NEGATIVE, POSITIVE, number

    probability, non_negative = number(0, 1), number(0)
    return dict(
        val_split=number(0, 1, above=True, below=True), epochs=POSITIVE, batch_size=POSITIVE, accum_steps=POSITIVE,
        lr=number(0, above=True), warmup_lr=non_negative, min_lr=non_negative, warmup_epochs=non_negative,
        weight_decay=non_negative, clip_grad=non_negative, layer_decay=probability,
        label_smoothing=number(0, 1, below=True), mixup=non_negative, cutmix=non_negative,
        mixup_switch_prob=probability, crop_scale=number(0, 1, above=True), hflip=probability,
        color_jitter=non_negative, reprob=probability, crop_pct=number(0, above=True), shift=NON_NEGATIVE,
        workers=NON_NEGATIVE, drop_path=number(0, 1, below=True), ema_decay=number(0, 1, below=True),
        ckpt_every=NON_NEGATIVE, keep=POSITIVE, max_steps=NON_NEGATIVE, num_processes=POSITIVE,
        process_id=NON_NEGATIVE, init_timeout=POSITIVE, img_size=POSITIVE)


def build_parser() -> argparse.ArgumentParser:
    from swin_jax.arguments import Parser

    ranges = _ranges()
    parser = Parser(
        prog="swin-jax train", description="Train or fine-tune a ViT or Swin with optax on every local device "
                                          "(and host); `--preset digits` is the default job.")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a named set of options")
    for f in flag_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "model_args":
            parser.add_argument("--model-arg", dest="model_args", action="append", metavar="KEY=VALUE",
                                help="override of the model config, e.g. embed_dim=64 (repeatable)")
        elif f.name == "img_size":
            parser.add_argument(flag, nargs=2, type=ranges["img_size"], metavar=("H", "W"),
                                help="image size (default: the model's)")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            if f.name in ranges:
                kind: Any = ranges[f.name]
            elif default is None or isinstance(default, str):
                kind = str
            else:
                kind = type(default)
            choices = {"on_bad_image": ("error", "skip"), "train_interpolation": ("bicubic", "bilinear", "random"),
                       "interpolation": ("bicubic", "bilinear"), "remat": REMAT_CHOICES,
                       "dtype": ("float32", "bfloat16")}.get(f.name)
            parser.add_argument(flag, type=kind, default=None, choices=choices, help=f"default {default}")
    return parser


def flag_fields() -> list[dataclasses.Field]:
    """The fields the command line sets: the run's, then every task's recipe's (each once)."""
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name != "recipe"]
    for _, recipe in TASKS.values():
        fields += [f for f in dataclasses.fields(recipe) if f.name not in {g.name for g in fields}]
    return fields


def make_config(**values: Any) -> TrainConfig:
    """A TrainConfig from flat values (flags, presets): the recipe's fields go to the recipe of
    the model's task, the rest to the run. A value neither takes is one error naming it."""
    model = values.get("model", TrainConfig.model)
    task = task_name(model)
    recipe_type = TASKS[task][1]
    recipe_names = {f.name for f in dataclasses.fields(recipe_type)}
    run_names = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    unknown = sorted(set(values) - recipe_names - run_names)
    if unknown:
        flags = ", ".join("--" + name.replace("_", "-") for name in unknown)
        raise InputError(f"{flags}: not an option of {task} training (--model {model})")
    recipe = recipe_type(**{k: v for k, v in values.items() if k in recipe_names})
    return TrainConfig(**{k: v for k, v in values.items() if k in run_names}, recipe=recipe)


def parse_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Command line -> TrainConfig: preset values first, then the flags given."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = dict(PRESETS[args.pop("preset")]) if args.get("preset") else {}
    if args.get("model") and values.get("model_args") and _family(args["model"]) != _family(values["model"]):
        del values["model_args"]  # the preset's model options are its family's (a Swin's depths, windows)
    model_args = args.pop("model_args")
    if model_args:
        extra = {}
        for item in model_args:
            if "=" not in item:
                parser.error(f"argument --model-arg: wants KEY=VALUE, got {item!r}")
            key, text = item.split("=", 1)
            extra[key] = _value(text)
        values["model_args"] = {**values.get("model_args", {}), **extra}
    values.update({k: v for k, v in args.items() if v is not None})
    if values.get("img_size") is not None:
        values["img_size"] = tuple(values["img_size"])
    return make_config(**values)
