"""The XLA compiler options swin_jax compiles its own programs with (train step, eval step,
`swin-jax bench`); pass them to `jax.jit(..., compiler_options=...)` in your own code.

On CPU, XLA's YNNPACK library fuses reductions (softmax, LayerNorm statistics) into its own
kernels by default; measured on a 2-core x86 machine, batch 8, fp32 (docs/PERFORMANCE.md), those
fused kernels ran slower than XLA's own: leaving them out made the Swin-T forward pass ~12%
faster and its train step's temporaries 780 -> 655 MiB, at the same train-step time.
"""
from __future__ import annotations

import functools

# XLA's default YNNPACK fusion types in jaxlib 0.10 (INDIVIDUAL_CONVOLUTION, INDIVIDUAL_DOT,
# REDUCE) less REDUCE; the same as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-REDUCE
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The options for programs on `backend` (default: JAX's default backend): CPU_OPTIONS on
    CPU when this jaxlib accepts them, else none."""
    import jax

    return dict(_options_for(backend or jax.default_backend()))


@functools.lru_cache(maxsize=None)
def _options_for(backend: str) -> tuple[tuple[str, str], ...]:
    import jax
    import jax.numpy as jnp

    if backend != "cpu":
        return ()
    try:  # older jaxlibs do not know the option and refuse to compile with it
        jax.jit(lambda x: x + 1).lower(jnp.zeros(2)).compile(dict(CPU_OPTIONS))
    except Exception:  # noqa: BLE001 - the error type differs across jaxlib versions
        return ()
    return tuple(CPU_OPTIONS.items())
