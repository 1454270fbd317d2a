"""The `swin-jax` command line: parity, convert, inspect, predict, train, validate, bench."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence
from swin_jax.arguments import USE_EMA_HELP, InputError

MAX_KEY_LINES = 12  # a mismatch lists at most this many keys on the terminal


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "img_size", None):
        out["img_size"] = tuple(args.img_size)
    if getattr(args, "window_size", None):
        out["window_size"] = args.window_size
    return out


def _parity(args: argparse.Namespace) -> int:
    from swin_jax.parity import check_parity

    report = check_parity(
        args.model, checkpoint=args.checkpoint, img_size=args.img_size, reference=args.reference,
        seed=args.seed, batch=args.batch, tolerance=args.tolerance, layout=args.layout, use_ema=args.use_ema,
    )
    print(report.table())
    return 0 if report.passed else 1


def _convert(args: argparse.Namespace) -> int:
    import jax

    from swin_jax.checkpoint_io import (PARAMS_SUFFIX, TENSOR_SUFFIXES, no_ema_weights, read_checkpoint, read_params,
                                        write_params, write_tensors)
    from swin_jax.configs import MODEL_CONFIGS, get_config
    from swin_jax.convert import from_torch, infer_num_classes, params_as_timm, to_torch
    from swin_jax.models import create_model

    from swin_jax.arguments import check_model_fits, check_output
    from swin_jax.hub import checkpoint_path

    src, dst = checkpoint_path(args.input), Path(args.output)
    for path, allowed in ((src, TENSOR_SUFFIXES), (dst, (".safetensors", ".npz"))):
        if path.suffix.lower() not in allowed + (PARAMS_SUFFIX,):
            raise InputError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(allowed + (PARAMS_SUFFIX,))}")
    check_output(dst, "OUTPUT", {"INPUT": src})
    check_model_fits(get_config(args.model, **_overrides(args)))  # unknown names and sizes fail before any reading
    config_cls = MODEL_CONFIGS[args.model][0]
    start = time.time()
    size = src.stat().st_size / 2**20 if src.is_file() else 0
    print(f"reading {src} ({size:,.1f} MiB)", file=sys.stderr)
    if src.suffix.lower() == PARAMS_SUFFIX:
        if args.use_ema:
            raise no_ema_weights(src, "a swin_jax params file holds one set")
        params = read_params(src)
        in_layout = "swin_jax params"
        as_timm = params_as_timm(params)
        num_classes = infer_num_classes(as_timm, config_cls)
        model = create_model(args.model, num_classes=num_classes, **_overrides(args))
        from_torch(model, as_timm)  # checks every key and shape against the model
    else:
        read = read_checkpoint(src, args.in_layout or (args.layout if dst.suffix.lower() == PARAMS_SUFFIX else None),
                               use_ema=args.use_ema)
        state, in_layout = read.state_dict, read.layout
        if read.describe_choice():
            print(f"read {read.describe_choice()}", file=sys.stderr)
        num_classes = infer_num_classes(state, config_cls, in_layout)
        model = create_model(args.model, num_classes=num_classes, **_overrides(args))
        params = from_torch(model, state, in_layout, progress=True)
    if dst.suffix.lower() == PARAMS_SUFFIX:
        write_params(params, dst)
        out_layout = "swin_jax params (Flax msgpack)"
    else:
        default = "vit_jax" if dst.suffix.lower() == ".npz" and config_cls.family == "vit" else "timm"
        out_layout = args.layout or default
        write_tensors(to_torch(model, params, out_layout, progress=True), dst)
    count = sum(int(v.size) for v in jax.tree.leaves(params))
    print(f"wrote {dst}: {args.model} ({num_classes} classes), {count:,} parameters, "
          f"{in_layout} -> {out_layout} in {time.time() - start:.1f}s")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from swin_jax.checkpoint_info import describe_file

    from swin_jax.hub import checkpoint_path

    path = checkpoint_path(args.file)
    info = describe_file(path, args.layout, args.use_ema)  # first: a bad file is one error line, nothing else
    print(f"file        {path} ({path.stat().st_size / 2**20:,.1f} MiB)" if path.is_file() else f"file        {path}")
    print(info.summary())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from swin_jax.arguments import check_output

    # --batch, --repeats and --json default by mode: the model bench's, or the input pipeline's
    default = lambda value, model, pipeline: value if value is not None else (pipeline if args.input else model)
    args.input = args.input or args.train_overhead
    batch, repeats = default(args.batch, 8, 64), default(args.repeats, 10, 5)
    json_path = default(args.json, "bench.json", "bench_input.json")
    check_output(json_path, "--json", {"--data": args.data})  # checked now: the bench takes minutes
    if args.input:  # the training input pipeline against timm's loader (train/input_bench.py)
        from train.input_bench import run_input_bench, table as input_table, write_json as write_input_json

        report = run_input_bench(args.data, args.workers, batch, args.batches, tuple(args.img_size or (224, 224)),
                                 args.recipe, repeats, train_overhead=args.train_overhead,
                                 train_steps=args.train_steps, log=lambda m: print(m, file=sys.stderr))
        print(input_table(report, markdown=args.markdown))
        print(f"wrote {write_input_json(report, json_path)}")
        return 0

    from train.bench import leave_gpu_memory_to_torch, run_bench, table, write_json

    leave_gpu_memory_to_torch()  # first: JAX has not started its backend yet
    if args.memory_table:  # the train step's memory per device by remat and placement
        import json

        from train.bench import memory_markdown, memory_table

        rows = memory_table(args.models, batch, log=lambda m: print(m, file=sys.stderr))
        print(memory_markdown(rows))
        Path(json_path).write_text(json.dumps(rows, indent=1))
        print(f"wrote {json_path}")
        return 0

    modes = ["forward", "train"] if args.train else ["forward"]
    options = {}
    for item in args.xla_option:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --xla-option takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        # XLA reads bools and numbers from Python values, enums and the rest from strings
        options[key] = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
    report = run_bench(args.models, batch, tuple(args.img_size) if args.img_size else None, args.dtype,
                       modes, repeats, args.torch_compile, log=lambda m: print(m, file=sys.stderr),
                       memory=args.memory, compiler_options=options or None, plain_xla=args.plain_xla,
                       remat=args.remat, fsdp=args.fsdp)
    print(table(report, markdown=args.markdown))
    print(f"wrote {write_json(report, json_path)}")
    if report["failures"]:  # the table lacks those rows: the run did not measure what was asked
        print(f"swin-jax bench: error: {len(report['failures'])} measurement(s) failed: "
              f"{'; '.join(report['failures'])}", file=sys.stderr)
        return 1
    return 0


def _predict(args: argparse.Namespace) -> int:
    import json

    from swin_jax.predict import predict

    results = predict(args.images, args.model, top=args.top, batch=args.batch, progress=True, use_ema=args.use_ema)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    for r in results:
        print(r.image)
        for rank, c in enumerate(r.top, 1):
            label = f"  {c.synset}  {c.name}" if c.name else ""
            print(f"  {rank}. {c.probability:8.4f}  class {c.index:<6d}{label}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from train.validate import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from swin_jax.arguments import NON_NEGATIVE, POSITIVE, Parser, number
    from swin_jax.configs import REMAT_CHOICES
    from swin_jax.layouts import LAYOUTS

    layouts = ", ".join(LAYOUTS)
    parser = Parser(prog="swin-jax", description="Swin Transformer and ViT in JAX/Flax.")
    commands = parser.add_subparsers(dest="command", required=True)

    parity = commands.add_parser(
        "parity", help="compare swin_jax with PyTorch, per stage/block and on the logits",
        description="Build MODEL in swin_jax and in PyTorch with the same weights (random at O(1) scale, "
                    "or a checkpoint in any layout), run both on the same images and print the differences. "
                    "Exit status: 0 PASS; 1 FAIL: a relative difference above the tolerance, a NaN or inf in "
                    "any output on either side, or an output one side did not return or returned in another "
                    "shape; 2 an error (a bad file or argument): nothing was compared.",
    )
    parity.add_argument("model", help="registered model name, e.g. swin_tiny_patch4_window7_224")
    parity.add_argument("--checkpoint", help="checkpoint file: .pth/.pth.tar/.pt/.bin/.ckpt/.safetensors/.npz/.msgpack, or "
                                             "pretrained weights' name: architecture.tag or hf-hub:ORG/REPO "
                                             "(default: random weights)")
    parity.add_argument("--layout", help=f"layout of the checkpoint (default: detected): {layouts}")
    parity.add_argument("--use-ema", action="store_true", help=USE_EMA_HELP)
    parity.add_argument("--img-size", nargs=2, type=POSITIVE, metavar=("H", "W"), help="image size (default: the model's)")
    parity.add_argument("--reference", choices=("ref", "timm"), default="ref",
                        help="PyTorch side: our swin_torch_ref (default) or timm")
    parity.add_argument("--batch", type=POSITIVE, default=2, help="images per batch (default 2)")
    parity.add_argument("--seed", type=int, default=0, help="seed of the random weights and images")
    parity.add_argument("--tolerance", type=number(0), default=1e-5,
                        help="largest allowed max|diff| / max(1, max|ref|) (default 1e-5)")
    parity.set_defaults(run=_parity)

    convert = commands.add_parser(
        "convert", help="convert weights between PyTorch layouts and swin_jax params",
        description="The direction follows the file types: a PyTorch-side file (.pth/.pth.tar/.pt/.bin/.ckpt/.safetensors/.npz) "
                    "to .msgpack imports into swin_jax; .msgpack to .safetensors/.npz exports; a PyTorch-side "
                    "file to .safetensors/.npz converts between layouts. The output is written to a temporary "
                    "file and renamed, so it is never left half-written.",
    )
    convert.add_argument("input", help="the file to read, or pretrained weights' name (architecture.tag, "
                                       "hf-hub:ORG/REPO): their file in the Hugging Face cache")
    convert.add_argument("output", help="the file to write (.msgpack, .safetensors or .npz)")
    convert.add_argument("--model", required=True, help="registered model name the weights are for")
    convert.add_argument("--layout", help=f"the PyTorch-side layout: of INPUT when importing (default: detected), "
                                          f"of OUTPUT otherwise (default: timm; vit_jax for a ViT .npz): {layouts}")
    convert.add_argument("--in-layout", help="force the input's layout when converting between two PyTorch-side files")
    convert.add_argument("--use-ema", action="store_true", help=USE_EMA_HELP)
    convert.add_argument("--img-size", nargs=2, type=POSITIVE, metavar=("H", "W"),
                         help="build the model for this image size (position embeddings / bias tables resized)")
    convert.add_argument("--window-size", type=POSITIVE, help="Swin window size of the model (bias tables resized)")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser(
        "predict", help="the top classes of images under pretrained weights, with their names",
        description="Classify images with pretrained weights (fetched from the Hugging Face Hub into its cache, "
                    "converted once): each image prepared with timm's evaluation transform for those weights "
                    "(shorter side resized to size / crop_pct with their interpolation, center crop, their mean "
                    "and std), then the top classes with probabilities and ImageNet class names.")
    predict.add_argument("images", nargs="+", help="image files (JPEG, PNG, ... anything Pillow reads)")
    predict.add_argument("--model", required=True,
                         help="pretrained weights: architecture.tag (e.g. swin_tiny_patch4_window7_224.ms_in1k), a "
                              "bare architecture for its default weights, or hf-hub:ORG/REPO")
    predict.add_argument("--top", type=POSITIVE, default=5, help="classes per image (default 5)")
    predict.add_argument("--batch", type=POSITIVE, default=16, help="images per forward pass (default 16)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of a table")
    predict.add_argument("--use-ema", action="store_true", help=USE_EMA_HELP)
    predict.set_defaults(run=_predict)

    commands.add_parser("train", help="train or fine-tune with optax (see `swin-jax train --help`)", add_help=False)

    validate = commands.add_parser(
        "validate", help="top-1 / top-5 and loss of a checkpoint over an ImageFolder (timm's evaluation transform)",
        description="Evaluate a checkpoint (any layout) on an ImageFolder with timm's evaluation transform: the "
                    "shorter side resized to size / crop_pct with the model's interpolation, center crop, the "
                    "model's mean and std. Decoding runs in worker processes. Prints top-1, top-5 and the loss.")
    validate.set_defaults(run=_validate)

    bench = commands.add_parser(
        "bench", help="img/s, compile time, memory and MFU of swin_jax against timm, in one run",
        description="Measure swin_jax (jitted) and timm (eager; --torch-compile adds torch.compile) on the same "
                    "inputs in one process: img/s of the forward pass (and, with --train, of a full train step "
                    "with AdamW), compile time, peak memory, and model FLOPs utilisation against this machine's "
                    "measured matmul peak. Prints a table with swin_jax / timm ratios and writes JSON. "
                    "With --input: the training input pipeline (decode, augment, batch, to the device, "
                    "normalise and erase there) against timm's create_loader, from a folder of JPEGs, with the "
                    "same augmentation and worker count. A measurement that fails is named, its rows are left "
                    "out of the table and the JSON's `failures` lists it, and the command exits 1.")
    bench.add_argument("models", nargs="*", default=["swin_tiny_patch4_window7_224", "vit_small_patch16_224"])
    bench.add_argument("--batch", type=POSITIVE, help="images per batch (default 8; 64 with --input)")
    bench.add_argument("--img-size", nargs=2, type=POSITIVE, metavar=("H", "W"),
                       help="image size (default: the model's; 224 224 with --input)")
    bench.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    bench.add_argument("--train", action="store_true", help="also time a full train step")
    bench.add_argument("--remat", choices=REMAT_CHOICES, default="none",
                       help="swin_jax's activation remat (default none); the table's note gives the compiled "
                            "program's XLA buffers: arguments, outputs, temporaries")
    bench.add_argument("--memory-table", action="store_true",
                       help="instead: the train step's XLA buffers per device for remat none / block, on one device "
                            "and on every local device replicated / FSDP, with the one-device step time (on a CPU, "
                            "XLA_FLAGS=--xla_force_host_platform_device_count=4 makes 4 devices)")
    bench.add_argument("--fsdp", action="store_true",
                       help="run swin_jax's train step as `python -m train --fsdp` does: over every local device, "
                            "params and optimizer state sharded (XLA buffers per device)")
    bench.add_argument("--repeats", type=POSITIVE,
                       help="timed rounds, each running every framework once in turn (medians are reported; "
                            "default 10, 5 with --input)")
    bench.add_argument("--torch-compile", action="store_true", help="also measure timm under torch.compile")
    bench.add_argument("--memory", action="store_true",
                       help="also measure each peak memory alone, in a fresh child process (slower)")
    bench.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an XLA compiler option for the swin_jax programs (repeatable), on top of "
                            "swin_jax.compiler_options(model), e.g. "
                            "xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    bench.add_argument("--plain-xla", action="store_true",
                       help="compile swin_jax with XLA's default options, not "
                            "swin_jax.compiler_options(model) (what the trainer uses)")
    bench.add_argument("--json", help="where to write the results (default bench.json; bench_input.json with --input)")
    bench.add_argument("--markdown", action="store_true", help="print the table in markdown")
    inputs = bench.add_argument_group("input pipeline (--input)")
    inputs.add_argument("--input", action="store_true",
                        help="benchmark the training input pipeline against timm's create_loader (models, --dtype, "
                             "--train, --torch-compile, --memory and --xla-option do not apply)")
    inputs.add_argument("--data", metavar="DIR",
                        help="an ImageFolder tree of JPEGs (default: 256 generated 500x375 JPEGs in a temporary folder)")
    inputs.add_argument("--workers", nargs="+", type=NON_NEGATIVE, default=[1, 2], metavar="K",
                        help="worker process counts to measure, the same on both sides (default 1 2)")
    inputs.add_argument("--batches", type=POSITIVE, default=16, help="timed batches per epoch and round (default 16)")
    inputs.add_argument("--recipe", nargs="+", choices=("basic", "full"), default=["basic", "full"],
                        help="augmentation: basic = random resized crop (bicubic) + flip; full = + RandAugment "
                             "rand-m9-mstd0.5-inc1, colour jitter 0.4, random erasing 0.25 (default both)")
    inputs.add_argument("--train-overhead", action="store_true",
                        help="also train a small Swin (batch 32) fed by the pipeline and from one batch in memory, "
                             "at each --workers, with the last --recipe, and report the step time lost to input "
                             "(implies --input)")
    inputs.add_argument("--train-steps", type=POSITIVE, default=6, help="timed steps per round for --train-overhead")
    bench.set_defaults(run=_bench)

    from train.validate import add_arguments  # argparse only: imports neither jax nor the trainer's code

    add_arguments(validate)

    inspect = commands.add_parser("inspect", help="show a checkpoint's layout, family, config and size")
    inspect.add_argument("file", help=".pth/.pth.tar/.pt/.bin/.ckpt/.safetensors/.npz checkpoint, .msgpack params file, or "
                                      "pretrained weights' name (architecture.tag, hf-hub:ORG/REPO)")
    inspect.add_argument("--layout", help=f"force the layout (default: detected): {layouts}")
    inspect.add_argument("--use-ema", action="store_true", help=USE_EMA_HELP)
    inspect.set_defaults(run=_inspect)
    return parser


def _short(err: Exception, args: argparse.Namespace) -> str:
    """The error for the terminal: its first line names the problem; key lists are cut short."""
    from swin_jax.convert import CheckpointMismatchError

    lines = str(err).splitlines() or [type(err).__name__]
    if isinstance(err, CheckpointMismatchError):
        source = getattr(args, "input", None) or getattr(args, "checkpoint", None)
        if source:
            try:
                from swin_jax.checkpoint_info import describe_file

                info = describe_file(source, use_ema=getattr(args, "use_ema", False))
                fits = ", ".join(info.matches) or f"a custom {info.family} ({info.config})"
                lines[0] += f"; the file holds {fits}"
            except Exception:  # the hint is a courtesy; the mismatch is the error
                pass
        if len(lines) > MAX_KEY_LINES + 1:
            lines = lines[:MAX_KEY_LINES + 1] + [f"  ... and {len(lines) - MAX_KEY_LINES - 1} more"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `swin-jax` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # the training command owns its flags (train/config.py)
        from train.loop import main as train_main

        return train_main(argv[1:])
    from swin_jax.arguments import run_command

    args = build_parser().parse_args(argv)
    # bad input is one line that names the problem; anything else is a bug and keeps its traceback
    return run_command(f"swin-jax {args.command}", lambda: args.run(args), lambda err: _short(err, args))


def console_main() -> None:
    """The `swin-jax` console script: `main`, then exit with its status."""
    from swin_jax.arguments import exit_with

    exit_with(main())


if __name__ == "__main__":
    console_main()
