"""Long-lived decoder processes with a hard per-file time limit.

Hostile media crash decoders (segfaults in FFmpeg or libsndfile) or hang them; no try/except catches a
segfault, and one dead worker breaks a whole ``concurrent.futures`` pool. So each worker here is a
plain process on its own pipe: a worker that dies costs its file ("decoder crashed"), one that runs past
the limit is killed and costs its file ("timed out"), and either is replaced while the others go on.
Text refs with inline text are answered in-process: there is nothing to decode.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .errors import BadItem
from .manifest import MediaRef

DEFAULT_TIMEOUT = 60.0


def _worker_main(conn: Connection) -> None:
    # One decode at a time; torch is never imported here, and BLAS threads stay at one.
    from .decode import decode

    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if msg is None:
            return
        idx, ref_json, root = msg
        try:
            item = decode(MediaRef.model_validate_json(ref_json), root)
            conn.send((idx, True, item))
        except BadItem as e:
            conn.send((idx, False, e.reason))
        except Exception as e:
            conn.send((idx, False, f"decoder error ({type(e).__name__}: {e})"))


class _Worker:
    def __init__(self, ctx: Any):
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=False, name="ee-decoder")
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class DecoderPool:
    """Decode refs in ``workers`` processes; ``decode_all`` keeps order and never raises for a file."""

    def __init__(self, workers: int = 2, timeout: float = DEFAULT_TIMEOUT, root: str | Path | None = None):
        self.n = max(1, int(workers))
        self.timeout = float(timeout)
        self.root = None if root is None else str(root)
        self._ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        self._workers: list[_Worker] = []
        self.crashes = 0
        self.timeouts = 0

    def _ensure_workers(self) -> None:
        while len(self._workers) < self.n:
            self._workers.append(_Worker(self._ctx))

    def decode_all(self, refs: Sequence[MediaRef]) -> list[Any]:
        """One result per ref: the decoded item, or a :class:`BadItem` carrying the reason."""
        results: list[Any] = [None] * len(refs)
        todo: list[int] = []
        for i, ref in enumerate(refs):
            if ref.kind == "text" and ref.text is not None:
                results[i] = ref.text
            else:
                todo.append(i)
        if not todo:
            return results
        self._ensure_workers()
        queue = list(reversed(todo))
        busy: dict[Connection, _Worker] = {}
        while queue or busy:
            for w in self._workers:
                if w.task is None and queue:
                    i = queue.pop()
                    try:
                        w.conn.send((i, refs[i].model_dump_json(), self.root))
                    except (BrokenPipeError, OSError):
                        queue.append(i)
                        self._replace(w, busy)
                        continue
                    w.task, w.deadline = i, time.monotonic() + self.timeout
                    busy[w.conn] = w
            if not busy:
                continue
            now = time.monotonic()
            ready = wait(list(busy), timeout=max(0.0, min(w.deadline for w in busy.values()) - now))
            for conn in ready:
                w = busy[conn]
                try:
                    idx, ok, payload = conn.recv()
                except (EOFError, OSError):
                    w.proc.join(timeout=5)
                    code = w.proc.exitcode
                    results[w.task] = BadItem(f"decoder crashed (exit code {code})")  # type: ignore[index]
                    self.crashes += 1
                    self._replace(w, busy)
                    continue
                results[idx] = payload if ok else BadItem(payload)
                w.task = None
                del busy[conn]
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if w.task is not None and now >= w.deadline and conn not in ready:
                    results[w.task] = BadItem(f"timed out: decoding took longer than {self.timeout:g}s")
                    self.timeouts += 1
                    self._replace(w, busy)
        return results

    def _replace(self, w: _Worker, busy: dict[Connection, _Worker]) -> None:
        busy.pop(w.conn, None)
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in self._workers:
            w.proc.join(timeout=2)
            w.kill()
        self._workers = []

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_decode_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2)))
