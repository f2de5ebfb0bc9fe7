"""Exceptions a user can cause, and the per-row failures that are recorded instead of raised.

The CLI turns every ``EEError`` into one line on stderr and its ``exit_code``; nothing else a user can
cause should escape as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Exit status of a write that failed for lack of space: not a user's mistake (2), not a bug (3).
DISK_FULL_EXIT = 4
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Rust's io::Error as safetensors reports it: "No space left on device (os error 28)" or "Os { code: 28, ... }"
_RUST_CODE = re.compile(r"(?:code: |os error )(\d+)")
_FULL_WORDS = ("No space left", "Disk quota exceeded", "File too large", "StorageFull", "FileTooLarge")


class EEError(Exception):
    """Base of the errors the CLI reports in one line."""

    exit_code: int = 2


class UserError(EEError):
    """A user's mistake (unknown encoder, missing path, bad option): nothing was done."""


class PluginError(EEError):
    """A plugin broke its contract (wrong output shape, NaNs, a hook that raised)."""

    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"plugin {plugin}: {message}")


class StoreError(EEError):
    """The store is missing, of another format, or does not match what the command expects."""


class DiskFullError(EEError):
    """A write failed for lack of space (full disk, quota, file-size limit); nothing half written is kept,
    and the same command after freeing space goes on where this one stopped."""

    exit_code = DISK_FULL_EXIT


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a write that found no space."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None or isinstance(seen, EEError):  # an EEError already says what it is
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if not isinstance(seen, OSError) and any(w in str(seen) for w in _FULL_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full(
    error: BaseException, what: str, where: str | os.PathLike[str], need: str = ""
) -> DiskFullError:
    """One line for a write that found no space: what, where, what it needs, what is free there.

    ``where`` is a local folder, or a URL (no free space to tell); ``need`` is the caller's estimate
    ("up to 2.1 MB for 1488 rows"), when it has one."""
    reason = "no space left on the device"
    for e in (error, error.__cause__, error.__context__):
        code = e.errno if isinstance(e, OSError) else _RUST_CODE.search(str(e)) if e is not None else None
        if code:
            reason = os.strerror(int(code if isinstance(code, int) else code.group(1)))
            break
    free = "free space unknown"
    where = str(where).removeprefix("file://")
    if "://" not in where:
        there = Path(where).absolute()
        while not there.exists() and there != there.parent:
            there = there.parent
        with contextlib.suppress(OSError):
            free = f"{human_size(shutil.disk_usage(there).free)} free on that file system"
    needs = f"needs {need}; " if need else ""
    return DiskFullError(
        f"could not write {what} in {where}: {reason} ({needs}{free}); free some space and run the same command again"
    )


@contextlib.contextmanager
def writing(
    where: str | os.PathLike[str], what: str, need: Callable[[], str] | None = None
) -> Iterator[None]:
    """Turn a write inside the block that found no space into :func:`disk_full`'s one line; ``need``
    estimates the space wanted, called only then."""
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise disk_full(e, what, where, need() if need else "") from e


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class EEWarning(UserWarning):
    """Something the person running ee should know and can act on (a loaded adapter of random weights, a
    run starting over). The CLI shows these, and no other library's warnings, as ``warning:`` lines."""


class BadItem(Exception):
    """One input cannot be embedded (unreadable media, audio too short): recorded with its reason."""

    def __init__(self, reason: str):
        self.reason = shown(reason)
        super().__init__(self.reason)


def shown(text: str) -> str:
    """``text`` fit to print and to store: the bytes of a file name that are not UTF-8 (which Python carries
    as lone surrogates, see ``os.fsdecode``) as ``\\xNN``. Printing or storing those surrogates raises."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name gives
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def field_errors(error: Any, whole: str = "", first_only: bool = False) -> str:
    """A pydantic ``ValidationError`` as one line, ``field.sub: message; ...``: the CLI prints one line.

    ``whole`` names an error that belongs to no field (a model-level check); ``first_only`` keeps the first
    problem, for input read line by line, where the rest are usually the same mistake again.
    """
    parts = []
    for err in error.errors()[:1] if first_only else error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or whole
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown option {loc}{_did_you_mean(str(err['loc'][-1]), error)}")
            continue
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _did_you_mean(name: str, error: Any) -> str:
    """`` (did you mean random_init?)`` when the model has a field close to ``name``."""
    import difflib

    model = getattr(error, "title", None)
    fields: list[str] = []
    for cls in _models_named(model):
        fields = list(getattr(cls, "model_fields", {}))
    close = difflib.get_close_matches(name.replace("-", "_"), fields, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _models_named(title: str | None) -> list[Any]:
    """The pydantic models named ``title`` (a ValidationError knows its model's name, not the class)."""
    if not title:
        return []
    from pydantic import BaseModel

    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__name__ == title:
            found.append(cls)
    return found
