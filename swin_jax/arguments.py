"""Checks of command-line input shared by `swin-jax` and `python -m train`, made before any work.

The one that guards the user's files: an output path is never one of the command's inputs. Two
paths are the same file when they name the same inode (a symbolic or hard link to the input
counts), not when their strings are equal.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional


class InputError(ValueError):
    """Bad input, reported as one line that names the problem (exit status 2)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether `a` and `b` are one file: the same inode when both exist (links included), else
    the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet), or cannot be read: compare where the names lead
        try:
            return os.path.realpath(a) == os.path.realpath(b)
        except (OSError, RuntimeError):  # a symlink loop leads nowhere, so to no input
            return False


def check_output(path: str | os.PathLike, flag: str, inputs: Mapping[str, Optional[str | os.PathLike]]) -> Path:
    """`path` as an output of the command: refused when it is a folder or one of `inputs`
    ({flag: path}, None for an input not given), with a message naming both flags."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; name a file to write")
    for input_flag, source in inputs.items():
        if source is not None and same_file(path, source):
            via = "" if os.fspath(path) == os.fspath(source) else " (through a link)"
            raise InputError(f"{flag} {path} is the same file as {input_flag} {source}{via}: refusing to write over "
                             f"an input")
    return path
