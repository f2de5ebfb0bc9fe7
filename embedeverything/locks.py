"""The store's two OS file locks, in ``STORE/.ee-locks/``; the OS drops a lock when its holder dies.

- ``index.lock`` (blocking, held for milliseconds): the row list, the root's attributes and the list of
  arrays change under it, so concurrent ``ee embed`` runs on one store (other sides, encoders, manifests)
  append their rows one after the other and never both create one group.
- ``<array>.lock`` (refused when taken): one writer per array for a whole run; it owns the array's chunks.
- ``exclusive_lock``, the rule behind the array lock, also keeps one ``ee index`` per search index.

Object storage has no such lock: there, one writer per store at a time is the rule (docs/store.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_DIR = ".ee-locks"


@contextlib.contextmanager
def index_lock(store_path: Path | None) -> Iterator[None]:
    """Wait for and hold the index lock of the store at ``store_path`` (nothing for object storage)."""
    if store_path is None:
        yield
        return
    import fcntl

    with _lock_file(store_path, "index") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def array_lock(store_path: Path | None, key: str) -> Iterator[None]:
    """Hold array ``key``'s writer lock, or refuse naming the process that holds it."""
    if store_path is None:
        yield
        return
    (store_path / LOCK_DIR).mkdir(exist_ok=True)
    with exclusive_lock(store_path / LOCK_DIR / f"{key}.lock", f"array {key} is being written by"):
        yield


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold the lock file at ``path`` for a whole run, or refuse at once with ``busy`` and the holder's
    pid (``array X is being written by`` ... ``pid 123``): the one rule for every one-writer-at-a-time
    thing, the store's arrays and the search index alike."""
    import fcntl

    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "another process"
            raise UserError(f"{busy} {other}; wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _lock_file(store_path: Path, name: str) -> Iterator[object]:
    lock_dir = store_path / LOCK_DIR
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+") as f:
        yield f
