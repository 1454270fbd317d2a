"""The `Kernels` setting of a model config: which implementation computes each op (attention, MLP,
LayerNorm, GELU, materialisation), `KERNEL_CHOICES` (the implementations each op may run with) and
`to_kernels`. Plain data: imports neither jax nor torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from swin_jax.arguments import InputError


# The implementations an op may run with (see `Kernels`); every one computes torch's maths.
KERNEL_CHOICES: dict[str, tuple[str, ...]] = {
    "attention": ("auto", "custom_vjp", "autodiff", "cudnn", "jax"),
    "attention_on_gpu": ("cudnn", "jax", "custom_vjp", "autodiff"),
    "mlp": ("custom_vjp", "autodiff"),
    "layer_norm": ("custom_vjp", "autodiff"),
    "gelu": ("auto", "erf", "erfc"),
    "materialize": ("auto", "barrier", "identity_matmul", "none"),
}


@dataclass(frozen=True)
class Kernels:
    """Which implementation computes each op of a model: a hashable setting of the config, so a
    program traced with one choice is never reused for another. Every choice computes the same
    maths (torch's); they differ in speed, memory, and in what JAX sees (`autodiff` ops are
    plain JAX, differentiated by JAX, so `jax.checkpoint` policies apply to them inside).

    - `attention`: `auto` runs `attention_on_gpu` where the computation is placed on a CUDA GPU
      (bias-free bf16/fp16 attention only, i.e. ViT) and `custom_vjp` elsewhere; `custom_vjp` is
      softmax attention with a written-out backward pass; `autodiff` the same forward,
      differentiated by JAX; `cudnn` / `jax` are `jax.nn.dot_product_attention`'s cuDNN and XLA
      implementations for bias-free bf16/fp16 attention (`custom_vjp` where that does not apply).
    - `mlp`, `layer_norm`: `custom_vjp` (written-out backward passes that keep what torch keeps)
      or `autodiff`.
    - `gelu`: the exact GELU as `erf` (torch's form) or `erfc` (jax.nn.gelu's); `auto` is erf on
      GPUs and erfc elsewhere, chosen by the platform the computation is placed on.
    - `materialize`: how the written-out backward passes compute a value once into its own buffer:
      `barrier` (jax.lax.optimization_barrier; XLA:CPU ignores it), `identity_matmul` (an exact
      product with an identity matrix; an inf becomes NaN in its row), `none`; `auto` is barrier
      on GPUs and identity_matmul elsewhere.
    """

    attention: str = "auto"
    attention_on_gpu: str = "cudnn"
    mlp: str = "custom_vjp"
    layer_norm: str = "custom_vjp"
    gelu: str = "auto"
    materialize: str = "auto"

    def __post_init__(self) -> None:
        for name, choices in KERNEL_CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(f"kernels.{name} must be one of {choices}, got {getattr(self, name)!r}")


def to_kernels(value: Union[Kernels, dict, None]) -> Kernels:
    """A `Kernels` from a `Kernels`, a dict of its fields, or None (the defaults)."""
    if value is None:
        return Kernels()
    if isinstance(value, Kernels):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(KERNEL_CHOICES))
        if unknown:
            raise InputError(f"unknown kernel setting(s) {unknown}; settings are {list(KERNEL_CHOICES)}")
        return Kernels(**value)
    raise TypeError(f"kernels must be a swin_jax.Kernels or a dict, got {type(value).__name__}")
