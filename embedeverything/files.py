"""Writing files so that a crash never leaves half of one, and hashing them.

Every file embedeverything writes outside the Zarr store (manifests, splits, checkpoints, adapters,
reports, figures, exports) goes through :func:`atomic_path`: the bytes go to a temporary file beside the
target, are flushed to disk, and only then renamed over the target. A reader sees the old file or the new
one, never a mix, and a failed write (a full disk, Ctrl-C, an exception) removes its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_open",
    "atomic_path",
    "file_digest",
    "fsync_path",
    "sha256_file",
    "temp_name",
    "write_text_atomic",
]


def temp_name(target: Path) -> Path:
    """The temporary file for ``target``: same folder (so the rename is atomic), same suffix (writers such
    as matplotlib and numpy choose the format by it), and the pid, so two processes never share one."""
    return target.with_name(f"{target.stem}.tmp-{os.getpid()}{target.suffix}")


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file, or a folder's entries, to disk (a rename is durable only once its folder is)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed over ``target``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target`` is left as
    it was. A symlink at ``target`` is replaced by the file, as ``os.replace`` does.
    """
    target = Path(target)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_open(
    target: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """``open(target, mode)`` through :func:`atomic_path`: the file appears whole when the block ends."""
    with atomic_path(target) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(target) as f:
        f.write(text)
    return Path(target)


_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, remembered per (path, size, mtime): a model file is hashed once."""
    p = os.path.abspath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file: how plugins state which weights they loaded."""
    return "sha256:" + file_digest(path)
