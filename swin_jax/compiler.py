"""The XLA compiler options swin_jax compiles its own programs with (train step, eval step,
`swin-jax bench`); pass them to `jax.jit(..., compiler_options=...)` in your own code. And
`trim_host_memory`, which hands the compiler's freed working memory back after compiling.

Which options each platform and model family gets is decided in `swin_jax.kernels`
(`COMPILER_OPTIONS`), beside the other implementation choices.
"""
from __future__ import annotations

import functools
from typing import Any


def compiler_options(model: Any, backend: str | None = None) -> dict[str, str]:
    """The options for `model`'s programs (a model name, config or created model) on `backend`
    ("cpu", "gpu", ...; default: JAX's default backend, where jit places a program unless told
    otherwise): `swin_jax.kernels.COMPILER_OPTIONS[backend][family]` when this jaxlib accepts
    them, else none; with activation remat (`config.remat`) also
    `swin_jax.kernels.REMAT_COMPILER_OPTIONS[backend]`."""
    import jax

    from swin_jax.configs import get_config
    from swin_jax.kernels import COMPILER_OPTIONS, REMAT_COMPILER_OPTIONS

    config = get_config(model) if isinstance(model, str) else getattr(model, "config", model)
    backend = backend or jax.default_backend()
    options = dict(COMPILER_OPTIONS.get(backend, {}).get(config.family, {}))
    if getattr(config, "remat", "none") != "none":
        options.update(REMAT_COMPILER_OPTIONS.get(backend, {}))
    if not options or not _accepted(tuple(options.items())):
        return {}
    return options


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
