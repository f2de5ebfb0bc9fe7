"""`ee embed`: one encoder over one side of a manifest, into the store, resumable.

The unit of work is one chunk of rows (the store's chunk): decode its pending rows in decoder processes,
embed the good ones in batches that start at the chunk's start (so a resumed run computes exactly the
batches an uninterrupted one would, and the bytes come out equal), write the block, then mark it done.
The next chunk is decoded in the background while the model computes the current one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .chunks import (
    ChunkRun,
    EmbedReport,
    Work,
    account,
    array_key,
    claim_identity,
    decode_rows,
    embed_chunk,
)
from .cluster import require_dask, run_on_cluster
from .decoder_pool import DEFAULT_TIMEOUT, DecoderPool, default_decode_workers
from .encoder import Encoder
from .errors import UserError
from .manifest import Manifest, MediaRef, read_manifest
from .plugins import get_encoder
from .runtime import pin_threads
from .store import DEFAULT_CHUNK_ROWS, FAILED, PENDING, EmbeddingArray, Store

__all__ = ["EmbedReport", "embed_side", "plan", "resolve_batch_size"]


def _prefetch(
    work: Work, pool: DecoderPool, depth: int = 1
) -> Iterator[tuple[int, dict[int, MediaRef], dict[int, Any]]]:
    """Decode chunk k+1 in a thread (driving the decoder processes) while the caller embeds chunk k."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk, refs in work:
                if stop.is_set():
                    return
                q.put((chunk, refs, decode_rows(pool, refs)))
            q.put(None)
        except BaseException as e:  # handed to the consumer, which re-raises
            q.put(e)

    t = threading.Thread(target=run, name="ee-decode", daemon=True)
    t.start()
    try:
        while True:
            got = q.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


def plan(
    store: Store,
    manifest: Manifest,
    side: str,
    encoder: Encoder,
    chunk_rows: int | None,
    retry_failed: bool = False,
) -> tuple[EmbeddingArray, Work]:
    """Sync the store's rows with the manifest, make the array, list the chunks with rows to do.

    Failed rows stay failed (a rerun is a no-op) unless ``retry_failed``: a file fixed or restored
    since, or a decoder that timed out on a loaded machine, deserves another try, asked for."""
    want = manifest.modality(side)
    if encoder.modality != want:
        raise UserError(
            f"encoder {encoder.name!r} embeds {encoder.modality}, but side {side} of the manifest is {want}"
        )
    rows, _ = store.sync_rows(manifest.pairs)
    key = array_key(side, encoder)
    arr = store.ensure_embedding(
        key,
        side=side,
        encoder=encoder.name,
        options=encoder.output_options(),
        dim=int(encoder.dim),
        chunk_rows=int(chunk_rows or DEFAULT_CHUNK_ROWS),
    )
    state = arr.state()
    todo = (PENDING, FAILED) if retry_failed else (PENDING,)
    by_chunk: dict[int, dict[int, MediaRef]] = {}
    for pair, row in zip(manifest.pairs, rows, strict=True):
        if state[row] in todo:
            by_chunk.setdefault(int(row) // arr.chunk_rows, {})[int(row)] = pair.side(side)
    return arr, sorted(by_chunk.items())


def resolve_batch_size(asked: int | None, default: int, chunk_rows: int) -> int:
    """Batches align with chunks (a resumed run computes the same batches, so the same bytes)."""
    if asked is not None:
        if asked <= 0 or chunk_rows % asked:
            raise UserError(
                f"batch size {asked} must divide the array's chunk of {chunk_rows} rows "
                "(batches align with chunks so that a resumed run computes the same bytes)"
            )
        return int(asked)
    return max(d for d in range(1, min(default, chunk_rows) + 1) if chunk_rows % d == 0)


def _chunk_rows(store: Store, key: str, asked: int | None) -> int:
    """An existing array keeps its chunks (they are its unit of resumption); a new one takes ``asked``."""
    return store.embedding(key).chunk_rows if key in store.keys() else int(asked or DEFAULT_CHUNK_ROWS)


def _run_here(
    arr: EmbeddingArray,
    encoder: Encoder,
    work: Work,
    report: EmbedReport,
    run: ChunkRun,
    decode_workers: int | None,
) -> None:
    """Every chunk in this process, in order, the next one decoding while the model embeds this one."""
    report.warnings += claim_identity(arr, encoder.identity())
    pin_threads(run.threads)
    pool = DecoderPool(decode_workers or default_decode_workers(), run.decode_timeout, run.root)
    try:
        for chunk, refs, decoded in _prefetch(work, pool):
            if account(report, embed_chunk(arr, encoder, chunk, decoded, run.batch_size), len(refs), run):
                break
    finally:
        pool.close()


def embed_side(
    store_location: str,
    manifest_path: str,
    side: str,
    encoder_name: str,
    options: dict[str, Any] | None = None,
    *,
    batch_size: int | None = None,
    chunk_rows: int | None = None,
    strict: bool = False,
    retry_failed: bool = False,
    threads: int | None = None,
    decode_workers: int | None = None,
    decode_timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
    scheduler: str | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedReport:
    """Embed side ``side`` of a manifest with one encoder into the store; see the module docstring.

    ``workers`` or ``scheduler`` run the chunks as Dask tasks (``cluster.py``); ``on_start(rows to do,
    rows in the manifest)`` and ``on_progress(rows)`` drive a progress display."""
    if workers is not None or scheduler is not None:
        require_dask()
    manifest = read_manifest(manifest_path)
    encoder = get_encoder(encoder_name, **(options or {}))
    store = Store.open(store_location, create=True)
    key = array_key(side, encoder)
    with store.writer_lock(key):
        cr = _chunk_rows(store, key, chunk_rows)
        bs = resolve_batch_size(batch_size, encoder.default_batch_size, cr)
        arr, work = plan(store, manifest, side, encoder, cr, retry_failed)
        report = EmbedReport(arr.key, arr.n_rows, 0, 0)
        if on_start is not None:
            on_start(sum(len(refs) for _, refs in work), len(manifest.pairs))
        run = ChunkRun(bs, threads, decode_timeout, str(manifest.root), strict, on_progress)
        if work and (workers or scheduler):
            run_on_cluster(arr, encoder, work, report, run, workers=workers, scheduler=scheduler)
        elif work:
            _run_here(arr, encoder, work, report, run, decode_workers)
        counts = arr.counts()
        report.done, report.failed = counts["done"], counts["failed"]
        return report
