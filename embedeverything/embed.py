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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decoder_pool import DEFAULT_TIMEOUT, DecoderPool, default_decode_workers
from .encoder import Encoder, EncoderIdentity, options_key, require_same_identity
from .errors import BadItem, StoreError, UserError
from .manifest import Manifest, MediaRef, read_manifest
from .plugins import get_encoder
from .runtime import pin_threads
from .store import DEFAULT_CHUNK_ROWS, DONE, FAILED, PENDING, EmbeddingArray, Store


@dataclass
class EmbedReport:
    key: str
    rows: int
    done: int
    failed: int
    new_done: int = 0
    new_failed: int = 0
    chunks_run: int = 0
    stopped_early: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.stopped_early else 0

    def add(self, res: ChunkResult) -> None:
        self.new_done += res.new_done
        self.new_failed += res.new_failed
        self.chunks_run += 1


@dataclass
class ChunkResult:
    chunk: int
    new_done: int
    new_failed: int


def array_key(side: str, encoder: Encoder) -> str:
    return f"{side}.{options_key(encoder.name, encoder.output_options())}"


def embed_chunk(
    arr: EmbeddingArray,
    encoder: Encoder,
    chunk: int,
    refs: dict[int, MediaRef],
    decoded: dict[int, Any],
    batch_size: int,
) -> ChunkResult:
    """Embed the pending rows of one chunk (``decoded``: row -> item or BadItem) and write the block."""
    lo, hi = arr.chunk_bounds(chunk)
    values, state, errors = arr.read_chunk(chunk)
    errors = [str(e) for e in errors]
    good_rows: list[int] = []
    good_items: list[Any] = []
    new_failed = 0
    for row in sorted(decoded):
        item = decoded[row]
        reason = item.reason if isinstance(item, BadItem) else None
        if reason is None:
            try:
                encoder.check_item(item)
            except BadItem as e:
                reason = e.reason
        if reason is not None:
            state[row - lo], errors[row - lo] = FAILED, reason
            values[row - lo] = 0.0
            new_failed += 1
        else:
            good_rows.append(row)
            good_items.append(item)
    for start in range(0, len(good_items), batch_size):
        out = encoder._embed_checked(good_items[start : start + batch_size])
        for k, row in enumerate(good_rows[start : start + batch_size]):
            values[row - lo] = out[k]
            state[row - lo], errors[row - lo] = DONE, ""
    arr.write_chunk(chunk, values, state, errors)
    return ChunkResult(chunk, len(good_rows), new_failed)


def _prefetch(
    work: list[tuple[int, dict[int, MediaRef]]], pool: DecoderPool, depth: int = 1
) -> Iterator[tuple[int, dict[int, MediaRef], dict[int, Any]]]:
    """Decode chunk k+1 in a thread (driving the decoder processes) while the caller embeds chunk k."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk, refs in work:
                if stop.is_set():
                    return
                rows = sorted(refs)
                items = pool.decode_all([refs[r] for r in rows])
                q.put((chunk, refs, dict(zip(rows, items, strict=True))))
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
) -> tuple[EmbeddingArray, list[tuple[int, dict[int, MediaRef]]]]:
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


def claim_identity(arr: EmbeddingArray, ident: EncoderIdentity) -> list[str]:
    """Record the encoder's identity on a new array; refuse to mix outputs of other weights into an old one."""
    if arr.identity is None:
        arr.set_identity(ident)
        return []
    return require_same_identity(
        arr.identity,
        ident,
        f"array {arr.key}",
        "use another store, or the same weights",
        StoreError,
        labels=("stored", "now"),
    )


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
    """Embed side ``side`` of a manifest with one encoder into the store; see the module docstring."""
    if workers is not None or scheduler is not None:
        from .cluster import require_dask

        require_dask()
    manifest = read_manifest(manifest_path)
    encoder = get_encoder(encoder_name, **(options or {}))
    store = Store.open(store_location, create=True)
    key = array_key(side, encoder)
    with store.writer_lock(key):
        cr = store.embedding(key).chunk_rows if key in store.keys() else int(chunk_rows or DEFAULT_CHUNK_ROWS)
        bs = resolve_batch_size(batch_size, encoder.default_batch_size, cr)
        arr, work = plan(store, manifest, side, encoder, cr, retry_failed)
        report = EmbedReport(arr.key, arr.n_rows, 0, 0)
        todo_rows = sum(len(refs) for _, refs in work)
        if on_start is not None:
            on_start(todo_rows, len(manifest.pairs))
        if work and (workers or scheduler):
            from .cluster import run_on_cluster

            run_on_cluster(
                arr,
                encoder,
                work,
                report,
                batch_size=bs,
                threads=threads or 1,
                decode_timeout=decode_timeout,
                root=str(manifest.root),
                workers=workers,
                scheduler=scheduler,
                strict=strict,
                on_progress=on_progress,
            )
        elif work:
            report.warnings += claim_identity(arr, encoder.identity())
            pin_threads(threads)
            pool = DecoderPool(decode_workers or default_decode_workers(), decode_timeout, manifest.root)
            try:
                for chunk, refs, decoded in _prefetch(work, pool):
                    res = embed_chunk(arr, encoder, chunk, refs, decoded, bs)
                    report.add(res)
                    if on_progress is not None:
                        on_progress(len(refs))
                    if strict and res.new_failed:
                        report.stopped_early = True
                        break
            finally:
                pool.close()
        counts = arr.counts()
        report.done, report.failed = counts["done"], counts["failed"]
        return report


def failures(store: Store, key: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(array, row id, reason) of every failed row."""
    ids = store.ids()
    for arr in store.arrays() if key is None else [store.embedding(key)]:
        st = arr.state()
        errs = arr.errors()
        for r in np.flatnonzero(st == FAILED):
            yield arr.key, str(ids[r]), str(errs[r])
