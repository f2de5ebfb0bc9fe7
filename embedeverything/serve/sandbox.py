"""Every decode ``ee serve`` does (uploads, thumbnails, audio windows, text files), in decoder processes
with a time limit, at most :data:`SLOTS` at a time.

A request that finds every slot busy is answered 503 at once rather than queued: a page that asks for
many thumbnails, or someone who uploads in a loop, must not pile up work the machine cannot finish.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..decoder_pool import DecoderPool
from ..errors import BadItem
from ..images import ImageDecoding
from ..manifest import MediaRef

SLOTS = 2
TIMEOUT_S = 20.0  # seconds one decode may take before its process is killed


class QueryError(Exception):
    """What the server answers instead: an HTTP status and one line for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Sandbox:
    """:data:`SLOTS` decoder processes, each its own pool, lent to one request at a time."""

    def __init__(self, slots: int = SLOTS, timeout: float = TIMEOUT_S):
        self._free: queue.Queue[DecoderPool] = queue.Queue()
        self._pools = [DecoderPool(workers=1, timeout=timeout) for _ in range(max(1, slots))]
        for p in self._pools:
            self._free.put(p)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[DecoderPool]:
        try:
            pool = self._free.get_nowait()
        except queue.Empty:
            raise QueryError(503, "the server is busy decoding: try again in a moment") from None
        try:
            yield pool
        finally:
            self._free.put(pool)

    def upload(self, path: Path, kind: str, decoding: ImageDecoding | None, name: str) -> Any:
        """The uploaded file decoded as a query item (see ``renditions.upload``); 422 when it is not.

        ``name``: the file's name on the client, said in place of the server's own name for it."""
        with self._slot() as pool:
            pool.image = None if decoding is None else decoding.model_dump()
            (item,) = pool.render_all("upload", [(str(path), kind)])
        if isinstance(item, BadItem):
            raise QueryError(422, f"cannot read {name}: {item.reason.replace(str(path), name)}")
        return item

    def render(self, op: str, ref: MediaRef, root: Path) -> bytes:
        """A thumbnail or audio window; 404 with the reason when the file is gone or unreadable."""
        with self._slot() as pool:
            pool.root, pool.image = str(root), None
            (out,) = pool.render_all(op, [ref.model_dump(exclude_none=True)])
        if isinstance(out, BadItem):
            raise QueryError(404, out.reason)
        return out

    def texts(self, refs: Sequence[MediaRef], root: Path) -> list[Any]:
        """The words of text refs kept in files (a :class:`BadItem` for one that cannot be read)."""
        if not refs:
            return []
        with self._slot() as pool:
            pool.root, pool.image = str(root), None
            return pool.render_all("text", [r.model_dump(exclude_none=True) for r in refs])

    def close(self) -> None:
        for p in self._pools:
            p.close()
