"""Reading `torch.save` files without running anything in their pickle.

Training scripts save more than tensors: timm an `argparse.Namespace` of its arguments, mm*
libraries mmengine objects in `meta`, Lightning its hyper-parameters, numpy scalars everywhere.
`torch.load(weights_only=True)` refuses every class it does not know, and `weights_only=False`
would run whatever the pickle names. We stay on torch's weights-only loader and tell it, by name
and without importing anything the file names (an import runs that module's code), what each
global the file names may become:

- a few harmless types are allowed as themselves (`argparse.Namespace`, as timm allows it;
  `datetime` values; `pathlib` paths, as pure paths);
- every other class (numpy's scalars, dtypes and arrays included) becomes an inert stand-in that
  only records its arguments and state;
- a function, or anything from a module that can run commands (`os`, `subprocess`, `builtins`'
  `eval`, ...), is refused with one error naming it: it is never called.

Names alone decide: a class's name is CapWords by Python's convention (plus a short list of
lower-case classes and constructors, `INERT_LOWER_CASE`); any other lower-case name is taken for a
function.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import pathlib
import re
from pathlib import Path
from typing import Any, Callable
from swin_jax.arguments import InputError


class UnsafeCheckpointError(InputError):
    """A checkpoint's pickle names a function or a module that can run code: it is not read."""


# Modules whose every global can run commands or import code: refused whatever the name's case.
# (Protocol-2 pickles name some by their Python 2 names: `subprocess.Popen` as `commands.Popen`.)
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "commands", "popen2", "shutil", "socket", "importlib", "runpy",
    "code", "codeop", "pty", "ctypes", "pickle", "_pickle", "marshal", "shelve", "webbrowser", "multiprocessing", "asyncio", "threading",
    "signal", "builtins", "__builtin__", "io", "_io", "tempfile", "pdb", "timeit", "operator", "functools",
    "inspect", "types", "copyreg", "torch.hub", "torch.ops", "torch.jit", "torch._C", "pydoc", "zipimport",
})


# Harmless types allowed as themselves: their constructors check what they are given and
# touch nothing outside the object (a path is not opened).
HARMLESS: dict[str, Any] = {
    "argparse.Namespace": argparse.Namespace,
    "datetime.datetime": datetime.datetime, "datetime.date": datetime.date, "datetime.time": datetime.time,
    "datetime.timedelta": datetime.timedelta, "datetime.timezone": datetime.timezone,
    "pathlib.Path": pathlib.PurePath, "pathlib.PosixPath": pathlib.PurePosixPath,
    "pathlib.WindowsPath": pathlib.PureWindowsPath, "pathlib.PurePosixPath": pathlib.PurePosixPath,
    "pathlib.PureWindowsPath": pathlib.PureWindowsPath, "pathlib.PurePath": pathlib.PurePath,
}
# Lower-case names of classes and constructors that become inert stand-ins (the CapWords rule
# would take them for functions). numpy's are among them on purpose: a pickled dtype's state sets
# numpy's internal flags unchecked (an object field at a pointer the file chooses), so numpy
# values in a checkpoint's metadata are recorded, never rebuilt. Builtin types as stand-ins also
# keep `frozenset(range(2**62))` from costing more than the bytes it is written in.
INERT_LOWER_CASE = frozenset({
    "collections.defaultdict", "collections.deque", "datetime.tzinfo",
    *(f"builtins.{t}" for t in ("list", "dict", "tuple", "set", "frozenset", "range", "slice", "int", "float",
                                "complex", "bool", "str", "bytes", "bytearray", "object")),
    "numpy.dtype", "numpy.ndarray",
    *(f"{m}.{f}" for m in ("numpy.core.multiarray", "numpy._core.multiarray") for f in ("scalar", "_reconstruct")),
})
PYTHON_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PickledObject(list):
    """The stand-in for an object of a class the file names: it keeps the arguments and state the
    pickle gives it and nothing else. A list, so that a pickled list subclass can be appended to."""

    pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        return list.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pickled_args = args

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    def __repr__(self) -> str:
        return f"<{self.pickled_name} from the checkpoint, not rebuilt>"


class PickledMapping:
    """The stand-in for a dict subclass (a yacs CfgNode, an EasyDict): torch's loader fills only
    plain dicts, so this one's instances are OrderedDicts."""

    def __new__(cls, *args: Any, **kwargs: Any) -> collections.OrderedDict:
        return collections.OrderedDict()


def _is_function_name(name: str) -> bool:
    return name not in INERT_LOWER_CASE and not name.rsplit(".", 1)[-1].lstrip("_")[:1].isupper()


def _dangerous(name: str) -> bool:
    module = name.rpartition(".")[0]
    return any(module == m or module.startswith(m + ".") for m in DANGEROUS_MODULES)


def _refusal(path: Path, name: str) -> UnsafeCheckpointError:
    what = "a function" if _is_function_name(name) else "a class"
    where = f" of {name.rpartition('.')[0]}, a module that can run commands" if _dangerous(name) else ""
    return UnsafeCheckpointError(
        f"refusing to read {path}: its pickle names {name}, {what}{where}, to be called while loading; nothing in "
        f"the file was run (only tensors and plain objects are read from a checkpoint)")


class _Globals:
    """What each global name the file holds becomes: itself (HARMLESS) or a stand-in class."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Any] = {}

    def allow(self, name: str, mapping: bool = False) -> None:
        """Decide `name` by name alone; a function or a dangerous module's global raises."""
        if "." not in name:  # torch's message drops `builtins.` from builtins' names
            name = f"builtins.{name}"
        if name in HARMLESS:
            self.entries[name] = HARMLESS[name]
            return
        if not PYTHON_NAME.fullmatch(name):
            raise InputError(f"cannot read {self.path}: its pickle names {name!r}, which is no Python name")
        if name not in INERT_LOWER_CASE and (_is_function_name(name) or _dangerous(name)):
            raise _refusal(self.path, name)
        base = PickledMapping if mapping else PickledObject
        qualname = f"{base.__name__}[{name}]"
        self.entries[name] = type(qualname, (base,), {"pickled_name": name, "__qualname__": qualname,
                                                      "__module__": __name__})

    def stand_in_named_by(self, text: str) -> str | None:
        """The global whose stand-in class an error message shows."""
        return next((name for name, value in self.entries.items()
                     if isinstance(value, type) and issubclass(value, PickledObject) and repr(value) in text), None)

    def safe_globals(self) -> list[tuple[Any, str]]:
        return [(value, name) for name, value in self.entries.items()]


MAX_ATTEMPTS = 64  # each retry teaches the loader one more name; a real file needs a few


def load_torch_file(path: str | Path, fail: Callable[[Exception], Exception]) -> Any:
    """`torch.load(path, weights_only=True)` with the globals the file names decided by name
    (see the module's docstring). `fail(err)` turns torch's own errors into ours."""
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    path = Path(path)
    decided = _Globals(path)
    try:  # zip files (torch >= 1.6) list their globals without unpickling anything
        names = get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # a legacy file, or a damaged one: torch's loader names what it meets
        names = []
    for name in sorted(names):
        decided.allow(name)
    for _ in range(MAX_ATTEMPTS):
        try:
            with safe_globals(decided.safe_globals()):
                return torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            text = str(err)
            unknown = re.search(r"Unsupported global: GLOBAL (\S+) was not an allowed global", text)
            blocked = re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", text)
            filled = re.search(r"Can only SETITEMS? for dict", text) and decided.stand_in_named_by(text)
            if blocked:
                raise _refusal(path, blocked[1]) from None
            if unknown and unknown[1] not in decided.entries:
                decided.allow(unknown[1])
            elif filled:
                decided.allow(filled, mapping=True)  # a dict subclass: filled as a dict
            else:
                raise fail(err)
    raise InputError(f"cannot read {path}: its pickle names more than {MAX_ATTEMPTS} classes")
