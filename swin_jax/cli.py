"""The `swin-jax` command line."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _parity(args: argparse.Namespace) -> int:
    from swin_jax.parity import check_parity

    report = check_parity(
        args.model, checkpoint=args.checkpoint, img_size=args.img_size, reference=args.reference,
        seed=args.seed, batch=args.batch, tolerance=args.tolerance,
    )
    print(report.table())
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swin-jax", description="Swin Transformer and ViT in JAX/Flax.")
    commands = parser.add_subparsers(dest="command", required=True)

    parity = commands.add_parser(
        "parity", help="compare swin_jax with PyTorch, per stage and on the logits",
        description="Build MODEL in swin_jax and in PyTorch with the same weights (random at O(1) scale, "
                    "or a timm-layout checkpoint), run both on the same images and print the differences. "
                    "Exits 1 when the largest relative difference is above the tolerance.",
    )
    parity.add_argument("model", help="registered model name, e.g. swin_tiny_patch4_window7_224")
    parity.add_argument("--checkpoint", help="timm-layout .pth / .pt / .safetensors file (default: random weights)")
    parity.add_argument("--img-size", nargs=2, type=int, metavar=("H", "W"), help="image size (default: the model's)")
    parity.add_argument("--reference", choices=("ref", "timm"), default="ref",
                        help="PyTorch side: our swin_torch_ref (default) or timm")
    parity.add_argument("--batch", type=int, default=2, help="images per batch (default 2)")
    parity.add_argument("--seed", type=int, default=0, help="seed of the random weights and images")
    parity.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest allowed max|diff| / max(1, max|ref|) (default 1e-5)")
    parity.set_defaults(run=_parity)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `swin-jax` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        # Bad input is reported as one clear message, not a traceback.
        print(f"swin-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
