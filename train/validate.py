"""`swin-jax validate`: top-1 / top-5 and loss of a checkpoint over an ImageFolder, with timm's
evaluation transform (shorter side to size / crop_pct, center crop, normalise; the model's
interpolation, crop_pct, mean and std) through the training pipeline's evaluation path."""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from swin_jax.arguments import InputError


def validate(model_name: str, checkpoint: str | Path, data: str | Path, *, batch_size: int = 64,
             workers: Optional[int] = None, img_size: Optional[Sequence[int]] = None, crop_pct: Optional[float] = None,
             interpolation: Optional[str] = None, layout: Optional[str] = None, on_bad_image: str = "error",
             model_args: Optional[dict] = None, use_ema: bool = False, log: Callable[[str], Any] = print) -> dict:
    """Evaluate `checkpoint` (any layout the converters read, or a swin_jax .msgpack) as model
    `model_name` on the ImageFolder `data` (`data/<class>/<image>`, classes in timm's natural
    order: label i is the i-th folder). Returns top1 / top5 (percent), mean cross-entropy, the
    image count and per-image rows (file, label, top-5 classes, their probabilities). A training
    checkpoint's EMA weights are evaluated with `use_ema`."""
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    import swin_jax
    from swin_jax.checkpoint_io import read_checkpoint
    from swin_jax.configs import MODEL_CONFIGS
    from swin_jax.convert import CheckpointFamilyError, from_torch, infer_num_classes
    from swin_jax.layouts import detect_family
    from train.data import scan_image_folder
    from train.task import prepare_images
    from train.pipeline import BatchPlan, Batches, EvalTransform, default_workers, host_batches

    swin_jax.get_config(model_name)  # an unknown name fails before anything is read
    read = read_checkpoint(checkpoint, layout, use_ema)
    state, layout = read.state_dict, read.layout
    config_cls = MODEL_CONFIGS[model_name][0]
    found = detect_family(layout, list(state))
    if found is not None and found != config_cls.family:  # a Swin file for a ViT, say: no head of the model's kind
        raise CheckpointFamilyError(found, config_cls.family, layout, model_name)
    num_classes = infer_num_classes(state, config_cls, layout)
    if num_classes == 0:
        raise InputError(f"{checkpoint} has no classifier head: there is nothing to validate")
    overrides = dict(model_args or {}, num_classes=num_classes)
    if img_size:
        overrides["img_size"] = tuple(img_size)
    model = swin_jax.create_model(model_name, **overrides)
    params = from_torch(model, state, layout)
    split, classes = scan_image_folder(data)
    if len(classes) > num_classes:
        raise InputError(f"{data} has {len(classes)} class folders but the checkpoint's head has {num_classes} classes")
    if len(classes) != num_classes:  # as timm without a class map: label i is the i-th folder
        log(f"warning: {data} has {len(classes)} class folders and the head {num_classes} classes; "
            f"folder i is scored as class i")
    d = swin_jax.get_data_config(model_name, crop_pct=crop_pct, interpolation=interpolation)
    size = model.config.img_size
    chosen = f", {read.describe_choice()}" if read.describe_choice() else ""
    log(f"validating {model_name} ({num_classes} classes, {layout} layout{chosen}) on {len(split)} images of {data}: "
        f"{size[0]}x{size[1]}, crop_pct {d.crop_pct}, {d.interpolation}, mean {d.mean}, std {d.std}")

    topk = min(5, num_classes)

    @jax.jit
    def predict(params: Any, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        logits = model.apply({"params": params}, prepare_images(images, None, None, d.mean, d.std))
        logits = logits.astype(jnp.float32)
        probs, top = jax.lax.top_k(jax.nn.softmax(logits), topk)
        return top, probs, optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    plan = BatchPlan(len(split), batch_size, seed=0, train=False)
    workers = default_workers() if workers is None else workers
    host = host_batches(split, plan, EvalTransform(size, d.crop_pct, d.interpolation), 0, plan.steps_per_epoch,
                        workers, on_bad_image)
    rows, losses, skipped = [], [], []
    start = time.time()
    def to_device(b: dict) -> dict:  # the weights stay on the host: they pick the rows to report
        return dict(image=jnp.asarray(b["image"]), label=jnp.asarray(b["label"]), weight=b["weight"])

    bar = tqdm(total=len(split), unit="img", disable=not sys.stderr.isatty())
    with Batches(host, 0, plan.steps_per_epoch, to_device) as batches:
        for step, batch, bad in batches:
            skipped += [split.files[i] for i in bad]
            top, probs, loss = jax.device_get(predict(params, batch["image"], batch["label"]))
            for k in range(len(top)):
                index = step * batch_size + k
                if index >= len(split) or batch["weight"][k] == 0:
                    continue  # padding of the last batch, or a skipped unreadable file
                label = int(split.labels[index])
                rows.append(dict(file=split.files[index], label=label, top=[int(c) for c in top[k]],
                                 probs=[float(p) for p in probs[k]]))
                losses.append(float(loss[k]))
            bar.update(min(batch_size, len(split) - step * batch_size))
    bar.close()
    for path in skipped:
        log(f"skipped unreadable image {path}")
    if not rows:
        raise InputError(f"no readable images in {data}")
    top1 = 100 * float(np.mean([r["top"][0] == r["label"] for r in rows]))
    top5 = 100 * float(np.mean([r["label"] in r["top"] for r in rows]))
    return dict(model=model_name, checkpoint=str(checkpoint), images=len(rows), skipped=skipped, top1=top1,
                top5=top5, loss=float(np.mean(losses)), classes=classes, rows=rows, seconds=time.time() - start)


def write_predictions(result: dict, path: str | Path) -> Path:
    """Per-image predictions as CSV (file, label, top-5 classes and probabilities), atomically."""
    from swin_jax.checkpoint_io import write_atomic

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "label", "top5", "probs"])
    for r in result["rows"]:
        writer.writerow([r["file"], r["label"], " ".join(map(str, r["top"])),
                         " ".join(f"{p:.6g}" for p in r["probs"])])
    return write_atomic(path, lambda f: f.write(text.getvalue().encode()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `swin-jax validate` flags."""
    from swin_jax.arguments import NON_NEGATIVE, POSITIVE, number
    from swin_jax.arguments import USE_EMA_HELP

    parser.add_argument("model", help="registered model name, e.g. swin_tiny_patch4_window7_224")
    parser.add_argument("--checkpoint", required=True,
                        help="weights: .pth/.pth.tar/.pt/.bin/.ckpt/.safetensors/.npz/.msgpack")
    parser.add_argument("--use-ema", action="store_true", help=USE_EMA_HELP)
    parser.add_argument("--data", required=True, help="ImageFolder root: DATA/<class>/<image> (classes in natural order)")
    parser.add_argument("--layout", help="layout of the checkpoint (default: detected)")
    parser.add_argument("--batch-size", type=POSITIVE, default=64)
    parser.add_argument("--workers", type=NON_NEGATIVE, help="decoding processes (default: CPU count - 1; 0: in-process)")
    parser.add_argument("--img-size", nargs=2, type=POSITIVE, metavar=("H", "W"), help="input size (default: the model's)")
    parser.add_argument("--crop-pct", type=number(0, above=True),
                        help="default: the model's (timm's for its default weights)")
    parser.add_argument("--interpolation", choices=("bicubic", "bilinear"), help="default: the model's")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the model config, e.g. embed_dim=64 (repeatable)")
    parser.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                        help="an unreadable image: stop with an error (default) or skip it and report it")
    parser.add_argument("--predictions", help="write per-image top-5 predictions to this CSV file")


def run(args: argparse.Namespace) -> int:
    """`swin-jax validate` from parsed flags; prints the summary line."""
    from swin_jax.arguments import check_output
    from train.config import _value

    if args.predictions:  # checked before the work: it would be lost after it
        check_output(args.predictions, "--predictions", {"--checkpoint": args.checkpoint})
    model_args = {}
    for item in args.model_arg:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(f"--model-arg wants KEY=VALUE, got {item!r}")
        model_args[key] = _value(text)
    result = validate(args.model, args.checkpoint, args.data, batch_size=args.batch_size, workers=args.workers,
                      img_size=args.img_size, crop_pct=args.crop_pct, interpolation=args.interpolation,
                      layout=args.layout, on_bad_image=args.on_bad_image, model_args=model_args, use_ema=args.use_ema,
                      log=lambda m: print(m, file=sys.stderr))
    if args.predictions:
        print(f"wrote {write_predictions(result, args.predictions)}", file=sys.stderr)
    skipped = f", {len(result['skipped'])} unreadable skipped" if result["skipped"] else ""
    print(f"{args.model}: top-1 {result['top1']:.3f}%, top-5 {result['top5']:.3f}%, loss {result['loss']:.5f} "
          f"over {result['images']} images{skipped} ({result['seconds']:.1f}s)")
    return 0
