"""Checks of command-line input shared by `swin-jax` and `python -m train`, made before any work.

An output path is never one of the command's inputs: two paths are the same file when they name
the same inode (a symbolic or hard link to the input counts), not when their strings are equal.
Numbers are checked by their flag's argparse type (`integer`, `number`), so a value out of range
is one line naming the flag and what it allows, before anything is loaded or compiled.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Optional, TextIO


# the help of --use-ema, on every command that reads a checkpoint
USE_EMA_HELP = "read a training checkpoint's EMA weights (state_dict_ema / model_ema; default: its model weights)"


class InputError(ValueError):
    """Bad input (a file, an argument, an option): what a command reports as one line that names
    the problem, with exit status 2. Every other exception is a bug and keeps its traceback."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class UnknownOptionError(InputError, TypeError):
    """A model or command option that does not exist."""


class MissingExtraError(InputError, ImportError):
    """An optional dependency the command needs is not installed (the message names the extra)."""


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


def check_input_file(path: str | os.PathLike, what: str = "checkpoint file") -> Path:
    """`path` as a file to read: one that is missing, a folder, a device or pipe, a link that leads
    nowhere or an unreadable file is refused with a message that says which."""
    path = Path(path)
    try:
        return _check_input_file(path, what)
    except OSError as err:  # a name too long, a folder that cannot be searched
        raise InputError(f"{what} {path}: {err.strerror or err}") from None


def _check_input_file(path: Path, what: str) -> Path:
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
            why = "a link that leads nowhere"
        except OSError as err:  # ELOOP: a cycle of links; ENOENT: a missing target
            why = "a symbolic link loop" if err.errno == errno.ELOOP else f"a link to {os.readlink(path)}, which does not exist"
        raise MissingInputError(f"{what} {path} is {why}")
    if not path.exists():
        raise MissingInputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file (a device, a pipe or a socket)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} cannot be read: permission denied")
    return path


def check_address(address: str, flag: str, resolve_timeout: float = 5.0) -> tuple[str, int]:
    """`HOST:PORT` (`[IPv6]:PORT` too) with a port in 1-65535 and a host name that resolves within
    `resolve_timeout` seconds: (host, port)."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise InputError(f"{flag} wants HOST:PORT, got {address!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InputError(f"{flag} {address}: port {port} is out of range (1-65535)")
    found: list[Any] = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as err:
            found.append(err)

    thread = threading.Thread(target=look_up, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(resolve_timeout)
    if not found:
        raise InputError(f"{flag} {address}: the host name {host!r} did not resolve within {resolve_timeout:g} s")
    if isinstance(found[0], OSError):
        raise InputError(f"{flag} {address}: the host name {host!r} does not resolve ({found[0].strerror or found[0]})")
    return host, port


def rendezvous(address: str, count: int, index: int, timeout: float, flag: str = "--coordinator",
               resolved: Optional[tuple[str, int]] = None) -> None:
    """Wait until every process of a multi-process run is there, or give up after `timeout`
    seconds with one `InputError` naming who is missing. jax's own wait (`initialization_timeout`)
    ends in a C++ abort; this one runs first, on the coordinator's port, so that jax's starts only
    once everyone has arrived. Process 0 listens and counts the others' ids; each other process
    connects (retrying while nobody listens), says its id and the process count, and waits for
    the word to go; an id out of range, taken twice or with another count is refused on both
    sides. `resolved`: (host, port) from `check_address`, if it ran already."""
    host, port = resolved or check_address(address, flag)
    if count <= 1:
        return
    deadline = time.monotonic() + timeout
    if index == 0:
        try:  # on every interface, IPv4 and IPv6 where the system has both: the peers may use either
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True) \
                if socket.has_dualstack_ipv6() else socket.create_server(("", port))
        except OSError as err:
            raise InputError(f"process 0 of {count} cannot listen on port {port} of {address} "
                             f"({err.strerror or err})") from None
        joined: dict[int, socket.socket] = {}
        try:
            while len(joined) < count - 1:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    missing = sorted(set(range(1, count)) - set(joined))
                    raise InputError(f"process 0 of {count}: {len(joined)} of the other {count - 1} processes joined "
                                     f"at {address} within {timeout:g} s (--init-timeout); missing: "
                                     f"{', '.join(map(str, missing))}") from None
                conn.settimeout(5)
                try:
                    peer, peer_count = map(int, conn.makefile().readline().split())
                except (OSError, ValueError):  # not one of ours
                    conn.close()
                    continue
                problem = (f"--num-processes {peer_count} there, {count} here" if peer_count != count else
                           f"--process-id {peer} is out of range 1-{count - 1}" if not 0 < peer < count else
                           f"--process-id {peer} was taken by another process" if peer in joined else "")
                if problem:
                    conn.sendall(f"no {problem}\n".encode())
                    conn.close()
                    raise InputError(f"process 0 of {count}: a process joined at {address} with {problem}")
                joined[peer] = conn
            for conn in joined.values():
                conn.sendall(b"go\n")
        finally:
            for conn in joined.values():
                conn.close()
            server.close()
        return
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InputError(f"process {index} of {count}: no coordinator (process 0) answered at {address} within "
                             f"{timeout:g} s (--init-timeout)")
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 2)) as conn:
                conn.sendall(f"{index} {count}\n".encode())
                conn.settimeout(max(deadline - time.monotonic(), 0.01))
                answer = conn.makefile().readline().strip()
                if answer == "go":
                    return
                if answer.startswith("no "):
                    raise InputError(f"process {index} of {count}: process 0 at {address} refused it: {answer[3:]}")
        except OSError:  # nobody listens yet, or process 0 went away: try again until the deadline
            pass
        time.sleep(0.2)


def available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux's MemAvailable), None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_model_fits(config: Any, flag: str = "--img-size") -> None:
    """Refuse, before anything is built, a model whose image size needs more memory than there is:
    its per-token arrays (a ViT's position embedding, resampled from the checkpoint's; a Swin's
    attention masks, one row per token and window position) take about tokens x width x 4 bytes,
    twice over while they are made."""
    size = getattr(config, "img_size", None)
    patch = getattr(config, "patch_size", None)
    if size is None or not patch:
        return
    tokens = (size[0] // patch) * (size[1] // patch)
    window = getattr(config, "window_size", None)
    width = max(getattr(config, "embed_dim", 0), window[0] * window[1] if window else 0)
    needed, free = 2 * 4 * tokens * width, available_memory()
    if free is not None and needed > free:
        raise InputError(f"{flag} {size[0]} {size[1]} makes {tokens:,} tokens, whose arrays need about "
                         f"{needed / 2**30:,.1f} GiB; {free / 2**30:,.1f} GiB of memory is available")


def check_output(path: str | os.PathLike, flag: str, inputs: Mapping[str, Optional[str | os.PathLike]],
                 folder: bool = False) -> Path:
    """`path` as an output of the command (a file, or with `folder` a folder to write into):
    refused when it is the wrong kind, cannot be made or written, or is one of `inputs` ({flag:
    path}, None for an input not given), with a message naming both flags."""
    path = Path(path)
    try:
        return _check_output(path, flag, inputs, folder)
    except OSError as err:  # a name too long, a folder that cannot be searched
        raise InputError(f"{flag} {path}: {err.strerror or err}") from None


def _check_output(path: Path, flag: str, inputs: Mapping[str, Optional[str | os.PathLike]], folder: bool) -> Path:
    if folder:
        if path.exists() and not path.is_dir():
            raise InputError(f"{flag} {path} is a file; name a folder")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise InputError(f"{flag} {path}: the folder is not writable")
            return path
    elif path.is_dir():
        raise InputError(f"{flag} {path} is a folder; name a file to write")
    folder = next((p for p in path.absolute().parents if p.exists()), Path("/"))  # the nearest that exists
    if not folder.is_dir():
        raise InputError(f"{flag} {path}: {folder} is a file, so no folder can be made there")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: the folder {folder} is not writable")
    for input_flag, source in inputs.items():
        if source is not None and same_file(path, source):
            via = "" if os.fspath(path) == os.fspath(source) else " (through a link)"
            raise InputError(f"{flag} {path} is the same file as {input_flag} {source}{via}: refusing to write over "
                             f"an input")
    return path


# ----- argparse types: a value out of range is one error naming the flag and what it allows


def integer(minimum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an int of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its fallback message
    return parse


def number(minimum: Optional[float] = None, maximum: Optional[float] = None, above: bool = False,
           below: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [minimum, maximum] (open at an end with `above` /
    `below`); NaN and inf are refused."""
    low = "" if minimum is None else f"{'above' if above else 'at least'} {minimum:g}"
    high = "" if maximum is None else f"{'below' if below else 'at most'} {maximum:g}"
    allowed = " and ".join(filter(None, (low, high))) or "finite"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a number, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and (value <= minimum if above else value < minimum)) \
                or (maximum is not None and (value >= maximum if below else value > maximum)):
            raise argparse.ArgumentTypeError(f"must be a finite number {allowed}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE = integer(1)
NON_NEGATIVE = integer(0)


class Parser(argparse.ArgumentParser):
    """argparse with bad arguments reported in one line (`PROG: error: MESSAGE; see --help`),
    exit status 2, without the usage block above it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


# ----- one error boundary per command

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, so that clean-up (temporary files) runs as for
    Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def run_command(prog: str, work: Callable[[], int], describe: Callable[[InputError], str] = str,
                stream: Optional[TextIO] = None) -> int:
    """Run a command's `work` and return its exit status: an `InputError` becomes one line
    (`PROG: error: ...`, `describe` words it) and 2, Ctrl-C 130, SIGTERM 143 (each one line, after
    the clean-up its `finally` blocks do). Any other exception is a bug: it keeps its traceback.
    Warnings of swin_jax's own (NaN weights, say) are one `PROG: warning: ...` line each."""
    stream = stream or sys.stderr  # looked up now: a test may have replaced it
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGTERM, _terminate)
    def show(message: Any, category: type, filename: str, *rest: Any, **kwargs: Any) -> None:
        if "swin_jax" in filename or "/train/" in filename or issubclass(category, UserWarning) and \
                category.__module__.startswith(("swin_jax", "train")):
            print(f"{prog}: warning: {message}", file=stream, flush=True)
        else:
            shown(message, category, filename, *rest, **kwargs)

    shown = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return work()
    except InputError as err:
        print(f"{prog}: error: {describe(err)}", file=stream, flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C)", file=stream, flush=True)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=stream, flush=True)
        return EXIT_TERMINATED
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def exit_with(status: int) -> NoReturn:
    """Leave a console command with `status`. The work is done (or reported) by now, so a late
    Ctrl-C is ignored: it would otherwise interrupt the interpreter's exit handlers with a
    traceback under a run that succeeded."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
