"""The one seam for implementation choices: a model's `Kernels` setting in, the function that
computes each op out.

Every choice is either an explicit setting of the model (`create_model(..., kernels=...)`; it
is part of the config, so it is part of what jit traces) or `auto`, decided here for the
platform the computation is placed on (`jax.lax.platform_dependent`: a CPU computation on a GPU
host gets the CPU's choice). Nothing here reads or keeps global state.

What `auto` picks, and why (measured in docs/PERFORMANCE.md):
- GELU: on GPUs torch's erf form (XLA:GPU's erfc costs more: ViT-B/16 bf16 on an H100, forward
  6715 -> 7497 img/s, train step 2238 -> 2317 img/s); elsewhere the erfc form (on XLA:CPU the
  erf form ran ~40% faster in training but made fp32 results depend on how the batch is split
  over devices: 1.8e-5 between a 4-device and a 1-device run, against 5.5e-6; bound 1e-5).
- materialize: on GPUs jax.lax.optimization_barrier (ViT-B/16 train step +2.5% on an H100 over
  the identity matmul); XLA:CPU drops that barrier, so elsewhere the identity matmul.
- attention: on CUDA GPUs of compute capability >= 8.0, bias-free bf16/fp16 attention (ViT)
  runs as one fused kernel (`attention_on_gpu`, cuDNN by default: ViT-B/16 bf16 train step +14%
  on an H100; nothing of size N x N reaches memory, as in torch's SDPA); everything else runs
  `custom_vjp`, whose written-out backward XLA:CPU runs about twice as fast as autodiff's.
- XLA compiler options (`COMPILER_OPTIONS`, given per program by `swin_jax.compiler_options`):
  on CPU, XLA's YNNPACK library fuses reductions (softmax, LayerNorm statistics) into its own
  kernels by default. On a 2-core x86 machine, batch 8, fp32, those ran slower than XLA's own in
  Swin: leaving them out made the Swin-T forward ~12% faster and its train step's temporaries
  780 -> 655 MiB at the same step time. In ViT the same option made the train step ~5% and the
  forward ~4% slower (its bias gradients become XLA loop reductions), so it is per family.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from swin_jax import backward, reference
from swin_jax.configs import Kernels

Fn = Callable[[jax.Array], jax.Array]
GPU_PLATFORMS = ("cuda", "rocm")

# XLA's default YNNPACK fusion types in jaxlib 0.10 (INDIVIDUAL_CONVOLUTION, INDIVIDUAL_DOT,
# REDUCE) less REDUCE; the same as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-REDUCE
CPU_WITHOUT_REDUCE_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type":
                              "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
COMPILER_OPTIONS: dict[str, dict[str, dict[str, str]]] = {  # backend -> model family -> options
    "cpu": {"swin": CPU_WITHOUT_REDUCE_FUSIONS, "vit": {}},
}
# With activation remat (`config.remat`), on top of the family's options. JAX keeps a
# rematerialised forward pass apart from the original with optimization barriers; XLA:CPU's
# pipeline expands those barriers before common-subexpression elimination, which then merges the
# recomputation back into the forward pass (the activations are kept after all: measured on a
# toy 4-layer MLP, the compiled gradient had 35 matmuls, not 44, and more temporaries than
# without remat). Leaving that pass out keeps the recomputation.
REMAT_COMPILER_OPTIONS: dict[str, dict[str, str]] = {"cpu": {"xla_disable_hlo_passes": "cse_barrier_expander"}}


def on_gpu_else(x: jax.Array, gpu: Fn, other: Fn) -> jax.Array:
    """`gpu(x)` where the computation is placed on a GPU, `other(x)` elsewhere. Both are traced;
    only the placed platform's is compiled."""
    return jax.lax.platform_dependent(x, **{p: gpu for p in GPU_PLATFORMS}, default=other)


# ----- GELU forms


def gelu_auto(x: jax.Array) -> jax.Array:
    """The exact GELU, erf form on GPUs, erfc form elsewhere."""
    return on_gpu_else(x, reference.gelu_erf, reference.gelu_erfc)


def gelu_auto_derivative(x: jax.Array) -> jax.Array:
    return on_gpu_else(x, backward.gelu_erf_derivative, backward.gelu_erfc_derivative)


GELU: dict[str, tuple[Fn, Fn]] = {  # form -> (gelu, its derivative)
    "auto": (gelu_auto, gelu_auto_derivative),
    "erf": (reference.gelu_erf, backward.gelu_erf_derivative),
    "erfc": (reference.gelu_erfc, backward.gelu_erfc_derivative),
}


def gelu(x: jax.Array, kernels: Kernels) -> jax.Array:
    """The exact GELU (torch.nn.GELU()) in the form `kernels.gelu` names."""
    return GELU[kernels.gelu][0](x)


# Other MLP activations are other functions, not other ways of computing the GELU: a model's
# `act_layer`, with no kernel choice
OTHER_ACTIVATIONS: dict[str, tuple[Fn, Fn]] = {
    "quick_gelu": (reference.quick_gelu, backward.quick_gelu_derivative),
    "gelu_tanh": (reference.gelu_tanh, backward.gelu_tanh_derivative),
}


def activation(act_layer: str, kernels: Kernels) -> tuple[Fn, Fn]:
    """(function, derivative) of the MLP activation `act_layer` ('gelu': the exact GELU in the form
    `kernels.gelu` names; 'quick_gelu'; 'gelu_tanh')."""
    return GELU[kernels.gelu] if act_layer == "gelu" else OTHER_ACTIVATIONS[act_layer]


# ----- computing a value once into its own buffer


def materialize_auto(x: jax.Array) -> jax.Array:
    return on_gpu_else(x, jax.lax.optimization_barrier, backward.identity_product)


MATERIALIZE: dict[str, Fn] = {
    "auto": materialize_auto,
    "barrier": jax.lax.optimization_barrier,
    "identity_matmul": backward.identity_product,
    "none": lambda x: x,
}


def materialize_cotangent(x: jax.Array, kernels: Kernels) -> jax.Array:
    """Identity; in the backward pass the cotangent arriving here is computed once into a buffer
    (`kernels.materialize`; nothing with `none`)."""
    if kernels.materialize == "none":
        return x
    return backward.materialize_cotangent(MATERIALIZE[kernels.materialize], x)


# ----- LayerNorm and the MLP


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, dtype: Any,
               kernels: Kernels) -> jax.Array:
    """torch.nn.LayerNorm's forward, differentiated as `kernels.layer_norm` says."""
    if kernels.layer_norm == "custom_vjp":
        return backward.layer_norm(x, scale, bias, eps, dtype)
    return reference.layer_norm(x, scale, bias, eps, dtype)


def mlp(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array, kernels: Kernels,
        dropout: Optional[Fn] = None, act_layer: str = "gelu") -> jax.Array:
    """fc1 -> activation (the exact GELU unless `act_layer` says otherwise) -> (dropout) -> fc2.
    With an active `dropout` the plain formula is differentiated by JAX (the written-out backward
    keeps no dropout mask)."""
    gelu_fn, derivative = activation(act_layer, kernels)
    if dropout is not None:
        return reference.mlp(x, w1, b1, w2, b2, gelu_fn, dropout)
    if kernels.mlp == "custom_vjp":
        return backward.mlp_core(gelu_fn, derivative, MATERIALIZE[kernels.materialize], x, w1, b1, w2, b2)
    return reference.mlp(x, w1, b1, w2, b2, gelu_fn)


# ----- attention


@functools.lru_cache(maxsize=None)
def cudnn_attention_available() -> bool:
    """Whether this process has a CUDA GPU of compute capability >= 8.0 (Ampere on), where JAX's
    cuDNN fused attention runs. (cuDNN attention cannot even be traced without one.)"""
    try:
        device = jax.devices("gpu")[0]
        if "cuda" not in str(device.client.platform_version).lower():
            return False
        major, minor = (int(v) for v in str(device.compute_capability).split(".")[:2])
        return (major, minor) >= (8, 0)
    except Exception:  # no GPU backend, or a device without these attributes
        return False


def fused_applies(qkv: jax.Array, num_heads: int, bias: Optional[jax.Array]) -> bool:
    """Whether a fused kernel (jax.nn.dot_product_attention) can run this attention: no bias,
    bf16 or fp16, a head size that is a multiple of 8 up to 128 (cuDNN's limits)."""
    head_dim = qkv.shape[-1] // (3 * num_heads)
    return bias is None and qkv.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128


def fused_self_attention(qkv: jax.Array, num_heads: int, implementation: str) -> jax.Array:
    """Bias-free self-attention through jax.nn.dot_product_attention, (B, N, 3 * D) -> (B, N, D).

    The scale head_dim**-0.5 is applied to the scores inside, as torch's SDPA does. An odd token
    count is padded by one, the padded key masked out through the sequence lengths: JAX's cuDNN
    path takes even lengths only in training (ViT's 197 tokens were refused). The padded query
    row's output and gradients are sliced off."""
    with jax.named_scope(f"fused_attention_{implementation}"):  # named in profiles and lowered programs
        return _fused_self_attention(qkv, num_heads, implementation)


def _fused_self_attention(qkv: jax.Array, num_heads: int, implementation: str) -> jax.Array:
    batch, n, three_dim = qkv.shape
    head_dim = three_dim // (3 * num_heads)
    qkv = qkv.reshape(batch, n, 3, num_heads, head_dim)
    lengths = None
    if n % 2:
        qkv = jnp.pad(qkv, ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))
        lengths = jnp.full((batch,), n, jnp.int32)
    out = jax.nn.dot_product_attention(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], scale=head_dim**-0.5, query_seq_lengths=lengths,
        key_value_seq_lengths=lengths, implementation={"cudnn": "cudnn", "jax": "xla"}[implementation])
    return out[:, :n].reshape(batch, n, num_heads * head_dim)


def _split_heads(qkv: jax.Array, num_heads: int, scale_q: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, N, 3 * D) -> q (scaled by head_dim**-0.5 unless not `scale_q`), k, v as
    (B * heads, N, head_dim)."""
    batch, n, three_dim = qkv.shape
    head_dim = three_dim // (3 * num_heads)
    # (3, B * heads, N, head_dim): one transpose here, plain batched matmuls after it
    qkv = qkv.reshape(batch, n, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    qkv = qkv.reshape(3, batch * num_heads, n, head_dim)
    return (qkv[0] * head_dim**-0.5 if scale_q else qkv[0]), qkv[1], qkv[2]


def _merge_heads(out: jax.Array, batch: int, num_heads: int) -> jax.Array:
    _, n, head_dim = out.shape
    out = out.reshape(batch, num_heads, n, head_dim).transpose(0, 2, 1, 3)
    return out.reshape(batch, n, num_heads * head_dim)


def unfused_self_attention(qkv: jax.Array, num_heads: int, bias: Optional[jax.Array], implementation: str,
                           dropout: Optional[Fn] = None) -> jax.Array:
    """timm's attention on a fused qkv projection: q scaled before q·kᵀ, bias added, softmax in
    >= fp32; `custom_vjp` (written-out backward) or `autodiff`; an active `dropout` always
    takes the autodiff path (the written-out backward keeps no dropout mask)."""
    q, k, v = _split_heads(qkv, num_heads)
    if dropout is not None:
        out = reference.attention(q, k, v, bias, dropout)
    elif implementation == "custom_vjp":
        out = backward.attention_core(q, k, v, bias)
    else:
        out = reference.attention(q, k, v, bias)
    return _merge_heads(out, qkv.shape[0], num_heads)


def self_attention(qkv: jax.Array, num_heads: int, bias: Optional[jax.Array], kernels: Kernels,
                   dropout: Optional[Fn] = None) -> jax.Array:
    """Multi-head self-attention on a fused (B, N, 3 * D) qkv projection, as timm computes it;
    `bias` is (G, heads, N, N) with the batch laid out (B / G, G) (Swin: one bias per window
    position; ViT: None). Returns (B, N, D). The implementation is `kernels.attention`'s (see
    `swin_jax.Kernels`); a fused one only where `fused_applies` and no dropout is active."""
    choice = kernels.attention
    fused = dropout is None and fused_applies(qkv, num_heads, bias)
    if choice in ("cudnn", "jax") and fused:
        return fused_self_attention(qkv, num_heads, choice)
    if choice == "auto":
        gpu_choice = kernels.attention_on_gpu
        elsewhere = functools.partial(unfused_self_attention, num_heads=num_heads, bias=bias,
                                      implementation="custom_vjp", dropout=dropout)
        if gpu_choice in ("cudnn", "jax"):
            if not fused or (gpu_choice == "cudnn" and not cudnn_attention_available()):
                return elsewhere(qkv)
            gpu = functools.partial(fused_self_attention, num_heads=num_heads, implementation=gpu_choice)
        elif gpu_choice == "custom_vjp":
            return elsewhere(qkv)
        else:
            gpu = functools.partial(unfused_self_attention, num_heads=num_heads, bias=bias,
                                    implementation=gpu_choice, dropout=dropout)
        return on_gpu_else(qkv, gpu, elsewhere)
    return unfused_self_attention(qkv, num_heads, bias, "custom_vjp" if choice in ("cudnn", "jax") else choice,
                                  dropout)


def cosine_self_attention(qkv: jax.Array, num_heads: int, scale: jax.Array, bias: Optional[jax.Array],
                          kernels: Kernels, dropout: Optional[Fn] = None) -> jax.Array:
    """Swin V2's scaled cosine attention on a fused (B, N, 3 * D) qkv projection:
    softmax(scale_h · (q/|q|)·(k/|k|)ᵀ + bias)·v, q and k normalised as torch's F.normalize,
    `scale` (heads,) the clamped exp(logit_scale), no head_dim**-0.5. Returns (B, N, D). The core
    runs `custom_vjp` unless `kernels.attention` is `autodiff` or a dropout is active (no fused
    kernel takes a per-window bias)."""
    q, k, v = _split_heads(qkv, num_heads, scale_q=False)
    q, k = reference.l2_normalize(q), reference.l2_normalize(k)
    if dropout is not None or kernels.attention == "autodiff":
        out = reference.attention(q, k, v, bias, dropout or (lambda p: p), scale)
    else:
        out = backward.attention_core(q, k, v, bias, scale)
    return _merge_heads(out, qkv.shape[0], num_heads)
