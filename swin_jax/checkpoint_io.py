"""Reading and writing checkpoint files: `.pth`/`.pt`/`.bin` (torch), `.safetensors`, `.npz`,
and swin_jax's own params files, `.msgpack`.

`.safetensors`, `.npz` and `.msgpack` are read and written without torch. Writes go to a
temporary file in the destination folder and are renamed into place, so a failed write never
leaves a half-written file under the destination name.

Params files are Flax's msgpack serialisation of the params pytree (`flax.serialization`): one
self-contained file that any Flax user reads with `flax.serialization.msgpack_restore`, with no
extra dependency. Training checkpoints (optimizer state, steps, several kept) use orbax instead.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Optional

import numpy as np

# Keys under which training scripts nest the weights (Microsoft's official Swin uses `model`).
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
TENSOR_SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".npz")  # flat {key: tensor} files
PARAMS_SUFFIX = ".msgpack"  # swin_jax / Flax params pytree


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a flat {key: tensor} dict (numpy arrays, or torch tensors for
    torch files, read with `weights_only=True`). A truncated or corrupted file raises a
    ValueError that says so."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise ValueError(f"unsupported checkpoint type {suffix!r} ({path}); use {', '.join(TENSOR_SUFFIXES)}")
    if suffix in TORCH_SUFFIXES:
        obj = _torch_load(path)
    else:
        try:
            if suffix == ".safetensors":
                from safetensors.numpy import load_file

                return dict(load_file(str(path)))
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except Exception as err:  # each reader fails its own way on a damaged file
            raise ValueError(f"cannot read {path}: the file is truncated or corrupted ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from err
    while isinstance(obj, dict):
        nested = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not nested:
            break
        obj = obj[nested[0]]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    return dict(obj)


def _torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` of a file; one that torch cannot read raises a ValueError
    naming the file, with torch's reason but not its advice to load with `weights_only=False`."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        # torch's weights-only unpickler puts its reason after that marker, below the advice
        detail = text.split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        reason = reason.split(". ")[0][:200]  # the first sentence: what follows is advice
        advice = "weights_only" in text
        if "weights_only" in reason or "safe_globals" in reason:
            reason = ""
        problem, hint = "the file is truncated or corrupted", ""
        if reason.startswith("Unsupported global"):  # a whole training checkpoint, say
            problem, hint = "it holds objects other than tensors and plain containers", "; save its state_dict alone"
        reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        # the chained error's text would repeat torch's advice under ours
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {problem} ({reason}){hint}") \
            from (None if advice else err)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Write a file atomically: `write(file)` fills a temporary file in `path`'s folder, which
    is then renamed to `path`, so no half-written file is ever left under that name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # mode 0o666 less the umask, as open() gives (tempfile.mkstemp would make it 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_params(path: str | Path) -> dict:
    """Read a `.msgpack` params file (Flax's serialisation of the params pytree)."""
    from flax import serialization

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        params = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:
        raise ValueError(f"cannot read {path}: the file is truncated or corrupted ({type(err).__name__})") from err
    if not isinstance(params, dict):
        raise ValueError(f"{path} holds no params pytree")
    return params


def write_params(params: Any, path: str | Path) -> Path:
    """Write a params pytree to a `.msgpack` file, atomically."""
    import jax
    from flax import serialization

    host = jax.tree.map(np.asarray, params)
    return write_atomic(Path(path), lambda f: f.write(serialization.msgpack_serialize(host)))


def write_tensors(tensors: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write numpy arrays to a `.safetensors` or `.npz` file, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return write_atomic(path, lambda f: np.savez(f, **tensors))
    if suffix == ".safetensors":
        from safetensors.numpy import save

        return write_atomic(path, lambda f: f.write(save({k: np.ascontiguousarray(v) for k, v in tensors.items()})))
    raise ValueError(f"cannot write {suffix!r} files ({path}); use .safetensors or .npz")


def read_checkpoint(path: str | Path, layout: Optional[str] = None) -> tuple[dict[str, Any], str]:
    """Any checkpoint file as (flat tensors, layout name): a `.msgpack` params file comes back in
    the timm layout; other files keep their keys, and their layout is detected unless given.
    Pretrained weights' names (`architecture.tag`, `hf-hub:ORG/REPO`) read their file from the
    Hugging Face cache, fetched there first if needed (`swin_jax.hub`)."""
    from swin_jax.hub import checkpoint_path
    from swin_jax.layouts import detect_layout

    path = checkpoint_path(path)

    if Path(path).suffix.lower() == PARAMS_SUFFIX:
        from swin_jax.convert import params_as_timm

        return params_as_timm(read_params(path)), "timm"
    state_dict = read_state_dict(path)
    return state_dict, layout or detect_layout(list(state_dict))


def load_checkpoint(model: Any, path: str | Path, layout: Optional[str] = None) -> dict:
    """Read a checkpoint file in any known layout, or a `.msgpack` params file, into `model`'s
    params; position embeddings and bias tables are resized to the model if needed."""
    from swin_jax.convert import from_torch

    state_dict, layout = read_checkpoint(path, layout)
    return from_torch(model, state_dict, layout)


def save_checkpoint(model: Any, params: Any, path: str | Path, layout: str = "timm") -> Path:
    """Write `model`'s params to a `.safetensors` or `.npz` file in `layout`, atomically."""
    from swin_jax.convert import to_torch

    return write_tensors(to_torch(model, params, layout), path)
