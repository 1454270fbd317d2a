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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Optional

import numpy as np
from swin_jax.arguments import InputError, MissingInputError, check_input_file

# Keys under which training scripts nest their weights, in the order timm's `load_state_dict`
# tries them: EMA weights first when they are asked for, then the model's (timm and mm* save
# `state_dict`, Microsoft's Swin, DeiT and MAE `model`), then other scripts' names.
EMA_WEIGHT_SETS = ("state_dict_ema", "model_ema")
WEIGHT_SETS = ("state_dict", "model", "model_state_dict", "module")
# Wrappers whose attribute name prefixes every key: DDP / DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# torch files: timm's training output is `.pth.tar` (suffix `.tar`), Lightning's `.ckpt`
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")
TENSOR_SUFFIXES = TORCH_SUFFIXES + (".safetensors", ".npz")  # flat {key: tensor} files, or torch containers
PARAMS_SUFFIX = ".msgpack"  # swin_jax / Flax params pytree


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file's weights as read: flat tensors under the layout's keys, and what was
    chosen on the way (`read_checkpoint`)."""

    state_dict: dict[str, Any]
    layout: str
    weight_set: str = ""  # the container key read (`state_dict`, `state_dict_ema`, `model`, ...); "" for a flat file
    weight_sets: tuple[str, ...] = ()  # every weight set the file holds
    prefix: str = ""  # the wrapper prefix stripped from every key ("" for none)

    def describe_choice(self) -> str:
        """What was read, for messages: `state_dict_ema, prefix 'module.' stripped`."""
        parts = [self.weight_set] if self.weight_set else []
        parts += [f"prefix {self.prefix!r} stripped"] if self.prefix else []
        return ", ".join(parts)


def _tensor_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _holds_weights(value: Any, depth: int = 0) -> bool:
    """Whether a container value is a state_dict, or a container of one (`{'model': {'state_dict': ...}}`)."""
    if not isinstance(value, Mapping) or depth > 3:
        return False
    return any(map(_tensor_like, value.values())) or any(
        _holds_weights(value.get(k), depth + 1) for k in EMA_WEIGHT_SETS + WEIGHT_SETS)


def weight_sets(obj: Any) -> tuple[str, ...]:
    """The known weight-set keys of a loaded container that hold tensors."""
    return tuple(k for k in EMA_WEIGHT_SETS + WEIGHT_SETS if isinstance(obj, Mapping) and _holds_weights(obj.get(k)))


def no_ema_weights(path: Any, why: str) -> InputError:
    return InputError(f"{path} holds no EMA weights ({' / '.join(EMA_WEIGHT_SETS)}) to read with use_ema / "
                      f"--use-ema: {why}")


def select_weights(obj: Any, path: str | Path, use_ema: bool = False) -> tuple[str, dict[str, Any]]:
    """(weight-set key, flat tensors) of a loaded file, picked as timm's `load_state_dict` does:
    with `use_ema`, `state_dict_ema` or `model_ema`; else `state_dict`, `model`,
    `model_state_dict`, `module`; a dict of tensors is its own weights. A weight set nested in
    another (`{'model': {'state_dict': ...}}`) is opened too; entries of a state_dict that are not
    tensors (a step count, a version string) are left out, as they load into no parameter."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
    if not obj:
        raise InputError(f"{path} holds no tensors (an empty dict)")
    chosen: list[str] = []
    while (sets := weight_sets(obj)) and len(chosen) < 4:  # a pickle's dict may hold itself
        ema = [k for k in sets if k in EMA_WEIGHT_SETS]
        plain = [k for k in sets if k not in EMA_WEIGHT_SETS]
        if use_ema and not chosen:
            if not ema:
                raise no_ema_weights(path, f"it holds {', '.join(sets)}")
            key = ema[0]
        elif plain:
            key = plain[0]
        else:
            raise InputError(f"{path} holds only EMA weights ({', '.join(ema)}): read them with use_ema=True / "
                             f"--use-ema")
        chosen.append(key)
        obj = obj[key]
    if use_ema and not chosen:
        raise no_ema_weights(path, "it is a plain state_dict")
    tensors = {k: v for k, v in obj.items() if _tensor_like(v)}
    if not tensors:
        where = f"its {'.'.join(chosen)}" if chosen else "it"
        raise InputError(f"{path} holds no state_dict of tensors: {where} has {len(obj)} entries "
                         f"({', '.join(map(str, list(obj)[:6]))}{', ...' if len(obj) > 6 else ''}), no tensor among "
                         f"them, and no weight set ({', '.join(EMA_WEIGHT_SETS + WEIGHT_SETS)})")
    odd = [k for k in tensors if not isinstance(k, str)]
    if odd:
        raise InputError(f"{path} holds tensors under keys that are not strings ({odd[:3]}): no state_dict")
    return ".".join(chosen), tensors


def read_state_dict(path: str | Path, use_ema: bool = False) -> dict[str, Any]:
    """Read a checkpoint file into a flat {key: tensor} dict (numpy arrays, or torch tensors for
    torch files). A torch file's weights are picked from its container as timm picks them
    (`select_weights`; EMA weights with `use_ema`); nothing in its pickle is run
    (`swin_jax.torch_pickle`). A truncated or corrupted file raises a ValueError that says so."""
    return _read_weights(Path(path), use_ema)[1]


def _read_weights(path: Path, use_ema: bool) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """(weight set, flat tensors, every weight set) of a tensor file."""
    check_input_file(path)
    suffix = path.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise InputError(f"unsupported checkpoint type {suffix!r} ({path}); use {', '.join(TENSOR_SUFFIXES)} "
                         f"(timm's training output .pth.tar included)")
    if suffix in TORCH_SUFFIXES:
        obj = _torch_load(path)
        name, tensors = select_weights(obj, path, use_ema)
        return name, tensors, weight_sets(obj)
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = dict(load_file(str(path)))
        else:
            with np.load(path, allow_pickle=False) as archive:
                tensors = {k: archive[k] for k in archive.files}
    except Exception as err:  # each reader fails its own way on a damaged file
        raise InputError(f"cannot read {path}: the file is truncated or corrupted ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from err
    if not tensors:
        raise InputError(f"{path} holds no tensors")
    if use_ema:
        raise no_ema_weights(path, f"a {suffix} file holds one flat set of tensors")
    return "", tensors, ()


def _torch_load(path: Path) -> Any:
    """The object a torch file holds, read by torch's weights-only loader with the globals it
    names decided by name (`swin_jax.torch_pickle`). A file torch cannot read raises a ValueError
    naming the file, with torch's reason but not its advice to load with `weights_only=False`."""
    from swin_jax.torch_pickle import load_torch_file

    def fail(err: Exception) -> InputError:
        text = str(err)
        # torch's weights-only unpickler puts its reason after that marker, below the advice
        detail = text.split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        reason = reason.split(". ")[0][:200]  # the first sentence: what follows is advice
        if "weights_only" in reason:
            reason = ""
        problem = "the file is truncated or corrupted"
        if reason.startswith(("Can only", "Trying to call reduce", "Unsupported global")):
            problem = "it holds an object that torch's weights-only loader cannot rebuild"
            reason = reason.replace(" via `add_safe_globals`", "")
        reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        # the chained error's text would repeat torch's advice under ours
        error = InputError(f"cannot read {path} as a PyTorch checkpoint: {problem} ({reason})")
        error.__cause__ = None if "weights_only" in text else err
        return error

    return load_torch_file(path, fail)


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
        raise MissingInputError(f"params file not found: {path}")
    try:
        params = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:
        raise InputError(f"cannot read {path}: the file is truncated or corrupted ({type(err).__name__})") from err
    if not isinstance(params, dict):
        raise InputError(f"{path} holds no params pytree")
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
    raise InputError(f"cannot write {suffix!r} files ({path}); use .safetensors or .npz")


def _wrapper_prefixes(keys: list[str]) -> list[str]:
    """Prefixes every key shares that a wrapper may have added, most specific first: chains of
    `module.` / `_orig_mod.` (DDP, torch.compile, in either order), else one common first name
    (Lightning's `model.`)."""
    out = []
    prefix, rest = "", keys
    while rest and (first := rest[0].split(".", 1)[0] + ".") in WRAPPER_PREFIXES and \
            all(k.startswith(first) for k in rest):
        prefix += first
        rest = [k[len(first):] for k in rest]
        out.insert(0, prefix)
    if not out and keys and "." in keys[0]:
        first = keys[0].split(".", 1)[0] + "."
        if all(k.startswith(first) for k in keys):
            out.append(first)
    return out


def _fits(keys: list[str], layout: Optional[str]) -> bool:
    from swin_jax.layouts import get_layout, layout_of_keys

    return layout_of_keys(keys) is not None if layout is None else get_layout(layout).matches(keys)


def strip_wrapper_prefix(state_dict: dict[str, Any], layout: Optional[str] = None) -> tuple[dict[str, Any], str]:
    """(state_dict, stripped prefix): keys that fit no layout (or not `layout`) as they are lose
    the wrapper prefix that makes them fit (`module.`, `_orig_mod.`, both, or one common prefix
    such as Lightning's `model.`); keys that fit stay as they are (a layout may have a prefix of
    its own, as transformers' CLIP files have `vision_model.`)."""
    keys = list(state_dict)
    if _fits(keys, layout):
        return state_dict, ""
    for prefix in _wrapper_prefixes(keys):
        stripped = {k[len(prefix):]: v for k, v in state_dict.items()}
        if _fits(list(stripped), layout):
            return stripped, prefix
    return state_dict, ""


def read_checkpoint(path: str | Path, layout: Optional[str] = None, use_ema: bool = False) -> Checkpoint:
    """Any checkpoint file as a `Checkpoint`: flat tensors, their layout and what was chosen.

    A `.msgpack` params file comes back in the timm layout. Other files keep their keys, less a
    wrapper prefix that no layout has (`strip_wrapper_prefix`), and their layout is detected
    unless given. A torch file's weight set is picked as timm picks it (`select_weights`; EMA
    weights only with `use_ema`). Pretrained weights' names (`architecture.tag`,
    `hf-hub:ORG/REPO`) read their file from the Hugging Face cache, fetched there first if needed
    (`swin_jax.hub`)."""
    from swin_jax.hub import checkpoint_path
    from swin_jax.layouts import detect_layout

    path = checkpoint_path(path)

    if Path(path).suffix.lower() == PARAMS_SUFFIX:
        from swin_jax.convert import params_as_timm

        if use_ema:
            raise no_ema_weights(path, "a swin_jax params file holds one set")
        return Checkpoint(params_as_timm(read_params(path)), "timm")
    weight_set, state_dict, sets = _read_weights(Path(path), use_ema)
    state_dict, prefix = strip_wrapper_prefix(state_dict, layout)
    return Checkpoint(state_dict, layout or detect_layout(list(state_dict)), weight_set, sets, prefix)


def load_checkpoint(model: Any, path: str | Path, layout: Optional[str] = None, use_ema: bool = False) -> dict:
    """Read a checkpoint file in any known layout, or a `.msgpack` params file, into `model`'s
    params; position embeddings and bias tables are resized to the model if needed. A training
    checkpoint's EMA weights are read with `use_ema`, its model weights without."""
    from swin_jax.convert import from_torch

    checkpoint = read_checkpoint(path, layout, use_ema)
    return from_torch(model, checkpoint.state_dict, checkpoint.layout)


def save_checkpoint(model: Any, params: Any, path: str | Path, layout: str = "timm") -> Path:
    """Write `model`'s params to a `.safetensors` or `.npz` file in `layout`, atomically."""
    from swin_jax.convert import to_torch

    return write_tensors(to_torch(model, params, layout), path)
