"""Reading and writing checkpoint files: `.pth`/`.pt`/`.bin` (torch), `.safetensors`, `.npz`.

`.safetensors` and `.npz` are read and written with numpy alone. Writes go to a temporary file
in the destination folder and are renamed into place, so a failed write never leaves a
half-written file under the destination name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

# Keys under which training scripts nest the weights (Microsoft's official Swin uses `model`).
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a flat {key: tensor} dict (numpy arrays, or torch tensors for
    torch files, read with `weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    if suffix in TORCH_SUFFIXES:
        import torch

        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        while isinstance(obj, dict):
            nested = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
            if not nested:
                break
            obj = obj[nested[0]]
        if not isinstance(obj, dict):
            raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
        return dict(obj)
    raise ValueError(f"unsupported checkpoint type {suffix!r} ({path}); use .safetensors, .npz, .pth, .pt or .bin")


def write_tensors(tensors: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write numpy arrays to a `.safetensors` or `.npz` file, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".npz"):
        raise ValueError(f"cannot write {suffix!r} files ({path}); use .safetensors or .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if suffix == ".npz":
                np.savez(f, **tensors)
            else:
                from safetensors.numpy import save

                f.write(save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(model: Any, path: str | Path, layout: Optional[str] = None) -> dict:
    """Read a checkpoint file in any known layout (detected from its keys unless given) into
    `model`'s params; the ViT position embedding is resampled to the model's grid if needed."""
    from swin_jax.convert import detect_layout, from_torch

    state_dict = read_state_dict(path)
    return from_torch(model, state_dict, layout or detect_layout(list(state_dict)))


def save_checkpoint(model: Any, params: Any, path: str | Path, layout: str = "timm") -> Path:
    """Write `model`'s params to a `.safetensors` or `.npz` file in `layout`, atomically."""
    from swin_jax.convert import to_torch

    return write_tensors(to_torch(model, params, layout), path)
