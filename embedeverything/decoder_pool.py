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
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .errors import BadItem
from .images import ImageDecoding
from .manifest import MediaRef

DEFAULT_TIMEOUT = 60.0


# Test-only switches, read by each worker at start: a worker handed a file whose path contains the
# value dies by SIGSEGV (as FFmpeg does on some truncated streams) or sleeps forever (as blocked demuxing
# does). They exist so that the tests can prove isolation with a real dead or hung process.
CRASH_ON_ENV = "EE_TEST_DECODER_CRASH_ON"
HANG_ON_ENV = "EE_TEST_DECODER_HANG_ON"


def _test_faults(path: str | None) -> None:
    if not path:
        return
    crash, hang = os.environ.get(CRASH_ON_ENV), os.environ.get(HANG_ON_ENV)
    if crash and crash in path:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered asynchronously
        os._exit(139)
    if hang and hang in path:
        while True:
            time.sleep(3600)


def _handle(op: str, arg: Any, root: str | None, image: dict[str, Any] | None) -> Any:
    from .decode import decode, probe

    if op == "decode":
        ref = MediaRef.model_validate(arg)
        _test_faults(ref.path)
        return decode(ref, root, None if image is None else ImageDecoding(**image))
    if op == "probe":
        path, kind = arg
        _test_faults(path)
        full = Path(path) if Path(path).is_absolute() or root is None else Path(root) / path
        return probe(full, kind)
    if op in RENDITIONS:
        from . import renditions

        if op == "upload":
            return renditions.upload(arg[0], arg[1], image)
        _test_faults(arg.get("path"))
        return getattr(renditions, op)(arg, root)
    raise ValueError(f"unknown decoder request {op!r}")


#: what ``ee serve`` asks of a decoder (see :mod:`.renditions`)
RENDITIONS = ("thumbnail", "window", "text", "upload")

READY = ("ready",)
STARTUP_LIMIT = 120.0  # seconds a new worker may take to say it is ready


PARENT_POLL = 0.2  # seconds between a worker's checks that the process that started it still lives


def _exit_with_parent(parent: int) -> None:
    """End this worker, quietly, as soon as ``parent`` is gone (killed by SIGKILL, say).

    An orphan would finish its file and then print a BrokenPipeError traceback onto the user's terminal,
    or hang on a hostile file forever. A thread that watches the parent pid works wherever the pool was
    started from (``PR_SET_PDEATHSIG`` fires when the starting *thread* ends, and ``ee embed`` starts the
    pool from a thread that ends before the run does)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(0)

    threading.Thread(target=watch, name="ee-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, parent: int) -> None:
    # One request at a time; torch is never imported here, and BLAS threads stay at one.
    # Ctrl-C reaches the whole process group: the parent handles it and closes the pool; a worker that
    # died of it mid-file would print a traceback and be counted as a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    # The decoders' imports before the first file, then READY: a file's time limit counts from there,
    # so that a fresh worker's start-up (slow on a loaded machine) is never charged to the file.
    import av  # noqa: F401
    import PIL.Image  # noqa: F401
    import soundfile  # noqa: F401

    from . import decode  # noqa: F401

    try:
        conn.send(READY)
        while True:
            msg = conn.recv()
            if msg is None:
                return
            conn.send(_answer(*msg))
    except (EOFError, OSError, KeyboardInterrupt):  # the parent is gone (BrokenPipeError is an OSError)
        return


def _answer(idx: int, op: str, arg: Any, root: str | None, image: Any) -> tuple[int, bool, Any]:
    try:
        return idx, True, _handle(op, arg, root, image)
    except BadItem as e:
        return idx, False, e.reason
    except Exception as e:
        return idx, False, f"decoder error ({type(e).__name__}: {e})"


class _Worker:
    def __init__(self, ctx: Any):
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc = ctx.Process(
            target=_worker_main, args=(child, os.getpid()), daemon=False, name="ee-decoder"
        )
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0
        self.ready = False  # said READY: imports done; the per-file time limit applies from then

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class _Run:
    """The state of one ``DecoderPool._run``: what is left to send, who is busy, what came back."""

    def __init__(self, requests: Sequence[tuple[str, Any]]):
        self.requests = requests
        self.results: list[Any] = [None] * len(requests)
        self.queue = list(reversed(range(len(requests))))  # popped from the end: first request first
        self.busy: dict[Connection, _Worker] = {}
        # consecutive deaths without a result in between: a pool that cannot work stops, saying why
        self.idle_deaths = 0
        self.startup_deaths = 0


class DecoderPool:
    """Decode refs in ``workers`` processes; ``decode_all`` keeps order and never raises for a file.

    ``image``: how image files are decoded (the encoder's ``decoding``; None: the defaults)."""

    def __init__(
        self,
        workers: int = 2,
        timeout: float = DEFAULT_TIMEOUT,
        root: str | Path | None = None,
        image: ImageDecoding | None = None,
    ):
        self.n = max(1, int(workers))
        self.timeout = float(timeout)
        self.root = None if root is None else str(root)
        self.image = None if image is None else image.model_dump()
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
        # as a dict, not JSON: a path that is not UTF-8 (lone surrogates) has no JSON pydantic writes
        got = self._run([("decode", refs[i].model_dump(exclude_none=True)) for i in todo])
        for i, r in zip(todo, got, strict=True):
            results[i] = r
        return results

    def probe_all(self, files: Sequence[tuple[str | Path, str]]) -> list[Any]:
        """One result per (path, kind): ``decode.probe``'s dict, or a :class:`BadItem` with the reason.

        ``kind`` is video, image, audio or text; relative paths are taken from the pool's root.
        """
        return self._run([("probe", (str(path), kind)) for path, kind in files])

    def render_all(self, op: str, args: Sequence[Any]) -> list[Any]:
        """One result per argument of a :data:`RENDITIONS` request: bytes, text or a decoded upload, or
        a :class:`BadItem` with the reason (refs as dicts, an upload as ``(path, kind)``)."""
        if op not in RENDITIONS:
            raise ValueError(f"unknown rendition {op!r}")
        return self._run([(op, a) for a in args])

    def _run(self, requests: Sequence[tuple[str, Any]]) -> list[Any]:
        """Each request answered by some worker, in any order; results in the requests' order."""
        run = _Run(requests)
        if not requests:
            return run.results
        self._ensure_workers()
        while run.queue or run.busy:
            self._dispatch(run)
            if not run.busy:
                continue
            deadline = min(w.deadline for w in run.busy.values())
            ready = wait(list(run.busy), timeout=max(0.0, deadline - time.monotonic()))
            for conn in ready:
                self._receive(run, conn)
            self._expire(run, ready)
        return run.results

    def _dispatch(self, run: _Run) -> None:
        """Hand the next request to every idle worker; replace workers found dead while idle."""
        for w in list(self._workers):
            if w.task is not None or not run.queue:
                continue
            if not w.proc.is_alive():  # died while idle (OOM killer, a signal): not this file's fault
                run.idle_deaths += 1
                if run.idle_deaths > 3 * self.n:
                    raise RuntimeError(f"decoder processes die before any work (exit code {w.proc.exitcode})")
                self._replace(w, run.busy)
                continue
            i = run.queue.pop()
            op, arg = run.requests[i]
            try:
                w.conn.send((i, op, arg, self.root, self.image))
            except (BrokenPipeError, OSError):
                run.queue.append(i)
                self._replace(w, run.busy)
                continue
            w.task = i
            w.deadline = time.monotonic() + (self.timeout if w.ready else STARTUP_LIMIT)
            run.busy[w.conn] = w

    def _receive(self, run: _Run, conn: Connection) -> None:
        """One message from a worker: READY, a result, or its death (which costs its file)."""
        w = run.busy[conn]
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            w.proc.join(timeout=5)
            code = w.proc.exitcode
            if not w.ready and code == 1:  # a Python error before READY: start-up failed
                run.startup_deaths += 1
                if run.startup_deaths > 2 * self.n:
                    raise RuntimeError(
                        "decoder processes fail at start-up (exit code 1, see the traceback above); "
                        "a script that uses them must guard its entry with `if __name__ == '__main__':`"
                    ) from None
            run.results[w.task] = BadItem(f"decoder crashed ({_exit_reason(code)})")  # type: ignore[index]
            self.crashes += 1
            self._replace(w, run.busy)
            return
        if msg == READY:
            w.ready = True
            w.deadline = time.monotonic() + self.timeout
            return
        idx, ok, payload = msg
        run.results[idx] = payload if ok else BadItem(payload)
        run.idle_deaths = run.startup_deaths = 0
        w.task = None
        del run.busy[conn]

    def _expire(self, run: _Run, ready: list[Any]) -> None:
        """Kill the workers past their file's time limit; the file is recorded as timed out."""
        now = time.monotonic()
        for conn, w in list(run.busy.items()):
            if w.task is not None and now >= w.deadline and conn not in ready:
                if not w.ready:
                    raise RuntimeError(f"a decoder process did not start within {STARTUP_LIMIT:g}s")
                run.results[w.task] = BadItem(f"timed out: decoding took longer than {self.timeout:g}s")
                self.timeouts += 1
                self._replace(w, run.busy)

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


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def default_decode_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2)))
