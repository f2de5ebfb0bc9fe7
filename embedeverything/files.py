"""Writing files so that a crash never leaves half of one, reading users' text files, and hashing them.

Every file embedeverything writes outside the Zarr store (manifests, splits, checkpoints, adapters,
reports, figures, exports) goes through :func:`atomic_path`: the bytes go to a temporary file beside the
target, are flushed to disk, and only then renamed over the target. A reader sees the old file or the new
one, never a mix, and a failed write (a full disk, Ctrl-C, an exception) removes its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError, disk_full, human_size, is_disk_full

__all__ = [
    "about_size",
    "atomic_open",
    "atomic_path",
    "decode_user_line",
    "file_digest",
    "fsync_path",
    "read_user_text",
    "sha256_file",
    "temp_name",
    "write_output",
    "write_text_atomic",
]

BOM = b"\xef\xbb\xbf"


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


def _set_mode(tmp: Path, target: Path) -> None:
    """The mode a plain ``open()`` would give: an existing target's, else 0666 less the umask. Some
    writers (safetensors) make their file 0600 whatever the umask, which would hide adapters from a group."""
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)  # the only way to read it; set back at once
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):  # a file system without modes
        os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], make_parents: bool = True, need: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is synced and renamed over ``target``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target`` is left as
    it was; a write that found no space (full disk, quota, file-size limit) becomes a
    :class:`~embedeverything.errors.DiskFullError` naming ``target`` and ``need`` (the caller's estimate of
    the file's size, when it has one). A symlink at ``target`` is replaced by the file, as ``os.replace``
    does.
    """
    target = Path(target)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        _set_mode(tmp, target)
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, Exception) and is_disk_full(e):
            raise disk_full(e, target.name, target.parent, need) from e
        raise
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_open(
    target: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """``open(target, mode)`` through :func:`atomic_path`: the file appears whole when the block ends."""
    with atomic_path(target) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def about_size(tensors: dict[str, Any]) -> str:
    """A safetensors file's size, near enough for a message: its tensors' bytes (the header is small)."""
    return "about " + human_size(sum(int(t.nbytes) for t in tensors.values()))


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(target) as f:
        f.write(text)
    return Path(target)


def read_user_text(path: str | os.PathLike[str]) -> str:
    """A user's text file (a table, a list of queries) as UTF-8, with or without the byte order mark that
    spreadsheet programs write ("CSV UTF-8"): left in, it would become part of the first column's name.
    Another encoding is a :class:`UserError` naming the line and how to convert the file."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise not_utf8(path, data.count(b"\n", 0, e.start) + 1, data[e.start]) from None


def decode_user_line(path: str | os.PathLike[str], lineno: int, raw: bytes) -> str:
    """One line of a user's file read in binary (JSONL, line by line), as :func:`read_user_text` reads a file."""
    if lineno == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(path, lineno, raw[e.start]) from None


def not_utf8(path: str | os.PathLike[str], lineno: int, byte: int) -> UserError:
    p = Path(path)
    fixed = p.with_name(f"{p.stem}.utf8{p.suffix}")
    return UserError(
        f"{p}:{lineno}: not UTF-8 (byte 0x{byte:02x}); convert the file, e.g. from Latin-1: "
        f"iconv -f latin1 -t utf-8 {p} > {fixed}"
    )


def _written_in_place(path: Path) -> bool:
    """A device, FIFO or socket (``/dev/stdout``, a named pipe), or anything reached through ``/dev/fd``
    or ``/proc``: a rename over it would replace the link, or a file another process holds open."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return any(str(p).startswith(("/dev/", "/proc/")) for p in (path.absolute(), path.resolve()))


def write_output(target: str | os.PathLike[str], text: str) -> Path | None:
    """Write a result a user asked for by name (``--json-out FILE``): ``-`` is stdout; a device or FIFO
    is written in place; a symlink is followed and its target replaced atomically; a folder is refused.

    Returns the file written, None for stdout.
    """
    import sys

    from .errors import UserError

    if str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(target)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name to write to")
    if _written_in_place(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    real = Path(os.path.realpath(path))  # a (chain of) symlink(s): replace what it points to
    write_text_atomic(real, text)
    return path


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
