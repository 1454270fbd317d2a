"""Reading PyTorch checkpoint files into flat state_dicts."""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Keys under which training scripts nest the weights (Microsoft's official Swin uses `model`).
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a `.safetensors` (numpy arrays, no torch needed) or `.pth`/`.pt`/`.bin` file
    (torch tensors, read with `weights_only=True`) into a flat {key: tensor} dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt", ".bin"):
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
    raise ValueError(f"unsupported checkpoint type {suffix!r} ({path}); use .safetensors, .pth, .pt or .bin")
