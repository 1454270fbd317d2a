"""The XLA compiler options swin_jax compiles its own programs with (train step, eval step,
`swin-jax bench`); pass them to `jax.jit(..., compiler_options=...)` in your own code. And
`trim_host_memory`, which hands the compiler's freed working memory back after compiling.

On CPU, XLA's YNNPACK library fuses reductions (softmax, LayerNorm statistics) into its own
kernels by default. Measured on a 2-core x86 machine, batch 8, fp32 (docs/PERFORMANCE.md), those
fused kernels ran slower than XLA's own in Swin: leaving them out made the Swin-T forward pass
~12% faster and its train step's temporaries 780 -> 655 MiB, at the same train-step time. In ViT
the same option made the train step ~5% and the forward ~4% slower (its bias gradients become
XLA loop reductions), so it is kept per model family.
"""
from __future__ import annotations

import functools
from typing import Any

# XLA's default YNNPACK fusion types in jaxlib 0.10 (INDIVIDUAL_CONVOLUTION, INDIVIDUAL_DOT,
# REDUCE) less REDUCE; the same as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-REDUCE
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
CPU_OPTIONS_BY_FAMILY = {"swin": CPU_OPTIONS, "vit": {}}  # what measured faster, per family


def compiler_options(model: Any, backend: str | None = None) -> dict[str, str]:
    """The options for `model`'s programs (a model name, config or created model) on `backend`
    (default: JAX's default backend): on CPU its family's entry of CPU_OPTIONS_BY_FAMILY when
    this jaxlib accepts it, else none."""
    import jax

    from swin_jax.configs import get_config

    config = get_config(model) if isinstance(model, str) else getattr(model, "config", model)
    options = CPU_OPTIONS_BY_FAMILY.get(config.family, {})
    if (backend or jax.default_backend()) != "cpu" or not options or not _accepted(tuple(options.items())):
        return {}
    return dict(options)


@functools.lru_cache(maxsize=None)
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
    import jax
    import jax.numpy as jnp

    try:  # older jaxlibs do not know the option and refuse to compile with it
        jax.jit(lambda x: x + 1).lower(jnp.zeros(2)).compile(dict(options))
    except Exception:  # noqa: BLE001 - the error type differs across jaxlib versions
        return False
    return True


def trim_host_memory() -> bool:
    """Give the C heap's free pages back to the operating system (glibc's `malloc_trim(0)`).
    Returns whether it was called: False where the C library has no such call (then nothing
    happens); an allocator preloaded over glibc's (jemalloc, tcmalloc) ignores it.

    Call it once a program has compiled, before it first runs (`jax.jit(f).lower(...).compile()`,
    then this). XLA's compiler frees its working memory when it is done, but glibc keeps those
    pages, and the program's buffers are then allocated beside them: measured on CPU for a
    Swin-T train step at batch 8, the process's peak over its baseline fell from 2294 to 1547
    MiB (ViT-S: 1304 -> 1091 MiB); see docs/PERFORMANCE.md. The swin_jax trainer and
    `swin-jax bench` compile ahead and call it before the first run."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
