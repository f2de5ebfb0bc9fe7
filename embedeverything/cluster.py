"""`ee embed --workers N` / `--scheduler ADDRESS`: the same chunks, run as Dask tasks.

Each task embeds one chunk-aligned block of rows and writes its own region of the store, so no two writers
touch one chunk. Dask promises no exactly-once execution: a task rerun after a worker died recomputes the
same batches with the same thread count and rewrites the same bytes to the same region, so reruns are
harmless. Each worker process loads the encoder once and keeps it, with one long-lived decoder process of
its own (worker processes are made non-daemonic for that: daemonic processes cannot have children).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from typing import Any

from .chunks import (
    ChunkResult,
    ChunkRun,
    EmbedReport,
    Work,
    account,
    claim_identity,
    decode_rows,
    embed_chunk,
)
from .decoder_pool import DecoderPool
from .encoder import Encoder, EncoderIdentity
from .errors import EEError, StoreError, UserError
from .manifest import MediaRef
from .plugins import get_encoder
from .runtime import pin_threads
from .store import EmbeddingArray, Store

# Per worker process: encoders, decoder pools and stores, kept between tasks.
_WORKER: dict[tuple[Any, ...], Any] = {}


class ClusterError(EEError):
    """The cluster could not finish some rows; they stay pending and a rerun picks them up."""

    exit_code = 1


# ---- in each worker process ------------------------------------------------------------------------


def _kept(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """The worker's object for ``key``, made by ``make()`` on the first task that needs it."""
    if key not in _WORKER:
        _WORKER[key] = make()
    return _WORKER[key]


def _encoder(name: str, options_json: str) -> Encoder:
    def make() -> Encoder:
        enc = get_encoder(name, **json.loads(options_json))
        enc.ensure_loaded()
        return enc

    return _kept(("encoder", name, options_json), make)


def worker_identity(name: str, options_json: str) -> dict[str, Any]:
    """The encoder's identity as a worker sees it (weights are loaded there, not in the client)."""
    return _encoder(name, options_json).identity().model_dump(mode="json")


def worker_embed_chunk(
    location: str,
    key: str,
    chunk: int,
    name: str,
    options_json: str,
    ref_dicts: dict[int, dict[str, Any]],
    batch_size: int,
    threads: int,
    decode_timeout: float,
    root: str,
    identity_json: dict[str, Any],
) -> tuple[int, int, int]:
    """One Dask task: decode and embed one chunk, write it; (chunk, rows done, rows failed).

    Plain JSON-able arguments, so that a task pickles small and a rerun after a worker died is the
    same task."""
    enc = _encoder(name, options_json)
    hard, _ = EncoderIdentity.model_validate(identity_json).differences(enc.identity())
    if hard:
        raise StoreError(f"worker's encoder {name!r} differs from the array's identity in: {', '.join(hard)}")
    pin_threads(threads)
    if mp.current_process().daemon:
        raise UserError(
            "Dask worker processes are daemonic and cannot start decoder processes: "
            "start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )
    pool = _kept(
        ("pool", root, decode_timeout, enc.decoding),
        lambda: DecoderPool(1, decode_timeout, root, enc.decoding),
    )
    refs = {int(r): MediaRef.model_validate(d) for r, d in ref_dicts.items()}
    decoded = decode_rows(pool, refs)
    arr = _kept(("store", location), lambda: Store.open(location)).embedding(key)
    res = embed_chunk(arr, enc, chunk, decoded, batch_size)
    return res.chunk, res.new_done, res.new_failed


# ---- in the client -----------------------------------------------------------------------------------


def require_dask() -> None:
    """Fail early, and say which extra to install, when ``--workers`` / ``--scheduler`` lack Dask."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UserError("--workers / --scheduler need Dask: pip install 'embedeverything[dask]'") from None


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    require_dask()
    import logging
    import os

    import dask
    from distributed import Client, LocalCluster

    if not os.environ.get("EE_DEBUG"):
        # Dask's client logs its own retries ("Couldn't gather ... rescheduling") on this process's stderr;
        # what the user needs from them is in the report: which chunks failed, and that a rerun goes on.
        logging.getLogger("distributed").setLevel(logging.ERROR)

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except OSError as e:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
    return Client(cluster), cluster


def _submit(
    client: Any, arr: EmbeddingArray, encoder: Encoder, work: Work, run: ChunkRun, options_json: str
) -> dict[Any, tuple[int, int]]:
    """One task per chunk, named after it; future -> (chunk, rows to do in it)."""
    identity_json = arr.identity.model_dump(mode="json")  # type: ignore[union-attr]
    futures = {}
    for chunk, refs in work:
        fut = client.submit(
            worker_embed_chunk,
            arr.store.location,
            arr.key,
            chunk,
            encoder.name,
            options_json,
            {r: ref.model_dump(exclude_none=True) for r, ref in refs.items()},
            run.batch_size,
            run.threads or 1,
            run.decode_timeout,
            run.root,
            identity_json,
            key=f"ee-embed-{arr.key}-{chunk}",
            pure=False,
        )
        futures[fut] = (chunk, len(refs))
    return futures


def _collect(futures: dict[Any, tuple[int, int]], report: EmbedReport, run: ChunkRun) -> list[int]:
    """Fold results into ``report`` as tasks finish; the chunks whose workers Dask gave up on."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    try:
        from distributed import KilledWorker
    except ImportError:  # older releases
        from distributed.scheduler import KilledWorker

    killed: list[int] = []
    for fut in as_completed(list(futures)):
        chunk, n = futures[fut]
        try:
            c, done, failed = fut.result()
        except KilledWorker:
            killed.append(chunk)  # the other chunks go on; these rows stay pending
            continue
        except FutureCancelledError:
            continue
        if account(report, ChunkResult(c, done, failed), n, run):
            for other in futures:
                other.cancel()
            break
    return killed


def run_on_cluster(
    arr: EmbeddingArray,
    encoder: Encoder,
    work: Work,
    report: EmbedReport,
    run: ChunkRun,
    *,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Submit one task per pending chunk; fold results into ``report`` as they complete.

    Dask workers pin one torch thread unless ``run.threads`` says otherwise (as Dask's nanny does for
    BLAS): the bytes then equal those of an in-process run with ``--threads 1``."""
    options_json = json.dumps(encoder.given_options(), sort_keys=True)
    client, cluster = _client(workers, scheduler)
    try:
        ident = EncoderIdentity.model_validate(
            client.submit(worker_identity, encoder.name, options_json, pure=False).result()
        )
        report.warnings += claim_identity(arr, ident)
        killed = _collect(_submit(client, arr, encoder, work, run, options_json), report, run)
        if killed:
            spans = ", ".join(f"{lo}-{hi - 1}" for lo, hi in (arr.chunk_bounds(k) for k in sorted(killed)))
            raise ClusterError(
                f"Dask workers died repeatedly on rows {spans} of {arr.key}; those rows stay pending "
                "(everything else is written): rerun the same command to go on"
            )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
