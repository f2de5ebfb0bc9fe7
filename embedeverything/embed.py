"""`ee embed`: one encoder over one side of a manifest, into the store, resumable.

The unit of work is one chunk of rows (the store's chunk): decode its pending rows in decoder processes,
embed the good ones in batches that start at the chunk's start (so a resumed run computes exactly the
batches an uninterrupted one would, and the bytes come out equal), write the block, then mark it done.
The next chunk is decoded in the background while the model computes the current one.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .chunks import (
    ChunkRun,
    EmbedInterrupted,
    EmbedReport,
    Work,
    account,
    array_key,
    check_decoding,
    chunk_rows_for,
    claim_identity,
    decode_rows,
    embed_chunk,
)
from .cluster import require_dask, run_on_cluster
from .decoder_pool import DEFAULT_TIMEOUT, DecoderPool, default_decode_workers
from .encoder import Encoder, check_item_or_reason
from .errors import BadItem, UserError
from .manifest import Manifest, MediaRef, read_manifest
from .plugins import get_encoder
from .runtime import pin_threads
from .store import DEFAULT_CHUNK_ROWS, FAILED, PENDING, EmbeddingArray, Store

__all__ = ["EmbedInterrupted", "EmbedReport", "embed_side", "plan", "probe_chunk_rows", "resolve_batch_size"]


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


def check_modality(manifest: Manifest, side: str, encoder: Encoder) -> None:
    want = manifest.modality(side)
    if encoder.modality != want:
        raise UserError(
            f"encoder {encoder.name!r} embeds {encoder.modality}, but side {side} of the manifest is {want}"
        )


def plan(
    store: Store,
    manifest: Manifest,
    side: str,
    encoder: Encoder,
    chunk_rows: int | None,
    retry_failed: bool = False,
    chunk_source: str = "",
) -> tuple[EmbeddingArray, Work]:
    """Sync the store's rows with the manifest, make the array, list the chunks with rows to do.

    Failed rows stay failed (a rerun is a no-op) unless ``retry_failed``: a file fixed or restored
    since, or a decoder that timed out on a loaded machine, deserves another try, asked for."""
    check_modality(manifest, side, encoder)
    rows, _ = store.sync_rows(manifest.pairs)
    key = array_key(side, encoder)
    arr = store.ensure_embedding(
        key,
        side=side,
        encoder=encoder.name,
        options=encoder.output_options(),
        dim=int(encoder.dim),
        chunk_rows=int(chunk_rows or DEFAULT_CHUNK_ROWS),
        chunk_source=chunk_source,
    )
    check_decoding(arr, encoder)
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


def probe_chunk_rows(
    encoder: Encoder, refs: list[MediaRef], pool: DecoderPool, batch_size: int, parallel: int = 1
) -> tuple[int, str]:
    """Chunk rows for a new array, from the time one batch of its first rows takes (``chunk_rows_for``).

    Only the model's time counts: decoding runs beside it in other processes, and the first decode pays
    for starting them. The batch is computed again in its chunk: a probe writes nothing."""
    items = [
        x
        for x in pool.decode_all(refs[:batch_size])
        if not isinstance(x, BadItem) and check_item_or_reason(encoder, x) is None
    ]
    if not items:
        return DEFAULT_CHUNK_ROWS, "default: no readable row in the first batch to time the encoder on"
    t0 = time.perf_counter()
    encoder.embed_checked(items)
    per_row = (time.perf_counter() - t0) / len(items)
    rows = chunk_rows_for(per_row, len(refs), batch_size, parallel)
    return rows, f"timed: {per_row:.4g} s per row over {len(items)} rows, {len(refs)} rows to do"


def _chunk_rows(
    store: Store, key: str, asked: int | None, probe: Callable[[], tuple[int, str]] | None
) -> tuple[int, str]:
    """An existing array keeps its chunks (they are its unit of resumption, and of equal bytes on a
    resume); a new one takes ``asked``, else what ``probe`` measures, else the default."""
    if key in store.keys():
        return store.embedding(key).chunk_rows, ""
    if asked:
        return int(asked), "--chunk-rows"
    if probe is None:
        return DEFAULT_CHUNK_ROWS, "default"
    return probe()


def _run_here(
    arr: EmbeddingArray, encoder: Encoder, work: Work, report: EmbedReport, run: ChunkRun, pool: DecoderPool
) -> None:
    """Every chunk in this process, in order, the next one decoding while the model embeds this one."""
    report.warnings += claim_identity(arr, encoder.identity())
    for chunk, _refs, decoded in _prefetch(work, pool):
        res = embed_chunk(arr, encoder, chunk, decoded, run.batch_size, run.on_progress)
        if account(report, res, 0, run):
            break


def _count(report: EmbedReport, arr: EmbeddingArray) -> EmbedReport:
    counts = arr.counts()
    report.done, report.failed = counts["done"], counts["failed"]
    return report


def _drop_if_never_loaded(store: Store, key: str, existed: bool) -> None:
    """An array made by a run whose encoder never loaded holds nothing: it is not left behind."""
    if not existed and key in store.keys():
        arr = store.embedding(key)
        if arr.identity is None and arr.counts()["pending"] == arr.n_rows:
            store.remove_embedding(key)


@dataclasses.dataclass
class _Job:
    """One ``ee embed`` under its array's writer lock: what every step of it reads."""

    store: Store
    manifest: Manifest
    side: str
    encoder: Encoder
    pool: DecoderPool
    cluster: dict[str, Any]  # workers / scheduler; empty: in this process
    existed: bool  # the array was there before this run


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
    rows in the manifest)`` and ``on_progress(rows)`` drive a progress display. Ctrl-C raises
    :class:`EmbedInterrupted`, whose report counts what the store keeps."""
    cluster = {"workers": workers, "scheduler": scheduler} if workers or scheduler else {}
    if workers is not None or scheduler is not None:
        require_dask()
    manifest = read_manifest(manifest_path)
    encoder = get_encoder(encoder_name, **(options or {}))
    store = Store.open(store_location, create=True)
    key = array_key(side, encoder)
    with store.writer_lock(key):
        pool = DecoderPool(
            decode_workers or default_decode_workers(), decode_timeout, str(manifest.root), encoder.decoding
        )
        job = _Job(store, manifest, side, encoder, pool, cluster, key in store.keys())
        run = ChunkRun(0, threads, decode_timeout, str(manifest.root), strict, on_progress)
        try:
            return _embed_locked(job, run, batch_size, chunk_rows, retry_failed, on_start)
        except BaseException:
            _drop_if_never_loaded(store, key, job.existed)
            raise
        finally:
            pool.close()


def _embed_locked(
    job: _Job,
    run: ChunkRun,
    batch_size: int | None,
    chunk_rows: int | None,
    retry_failed: bool,
    on_start: Callable[[int, int], None] | None,
) -> EmbedReport:
    """:func:`embed_side` under the array's writer lock. In this process the encoder is loaded before
    a new array is made (a run whose weights are missing leaves nothing behind) and timed on a first
    batch to choose the array's chunk rows; on Dask, the workers load it."""
    enc = job.encoder
    key = array_key(job.side, enc)
    check_modality(job.manifest, job.side, enc)
    probe = None
    if not job.cluster:
        pin_threads(run.threads)
        if not job.existed:
            enc.ensure_loaded()
        refs = [p.side(job.side) for p in job.manifest.pairs]
        bs0 = batch_size or enc.default_batch_size
        probe = lambda: probe_chunk_rows(enc, refs, job.pool, bs0)  # noqa: E731
    cr, how = _chunk_rows(job.store, key, chunk_rows, probe)
    run = dataclasses.replace(run, batch_size=resolve_batch_size(batch_size, enc.default_batch_size, cr))
    arr, work = plan(job.store, job.manifest, job.side, enc, cr, retry_failed, chunk_source=how)
    report = EmbedReport(arr.key, arr.n_rows, 0, 0)
    if on_start is not None:
        on_start(sum(len(refs) for _, refs in work), len(job.manifest.pairs))
    try:
        if work and job.cluster:
            run_on_cluster(arr, enc, work, report, run, **job.cluster)
        elif work:
            _run_here(arr, enc, work, report, run, job.pool)
    except KeyboardInterrupt:
        raise EmbedInterrupted(_count(report, arr)) from None
    return _count(report, arr)
