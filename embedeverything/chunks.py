"""One chunk of one store array: the unit of work of ``ee embed``, wherever it runs.

The in-process runner (``embed.py``) and the Dask runner (``cluster.py``) both embed a chunk with
:func:`embed_chunk`, so a chunk comes out the same bytes in either: its pending rows decoded, the rows the
encoder rejects recorded as failed, the good ones embedded in batches that start at the chunk's start, and
the whole block written before it is marked done. Both runners fold their results into one
:class:`EmbedReport` with :func:`account`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .decoder_pool import DecoderPool
from .encoder import Encoder, EncoderIdentity, check_item_or_reason, options_key, require_same_identity
from .errors import BadItem, StoreError
from .manifest import MediaRef
from .store import DONE, FAILED, EmbeddingArray

#: The chunks of an array with rows to do: (chunk index, row -> media ref), in chunk order.
Work = list[tuple[int, dict[int, MediaRef]]]

#: The most one chunk's model time may be: what a Ctrl-C or a kill can cost, at worst.
CHUNK_SECONDS = 5.0
#: A shorter run is cut in at least this many chunks, so that an interrupt loses a twentieth of it at most.
CHUNKS_PER_RUN = 20
#: Rows of a chunk at most, however fast the encoder (the chunk is also a Zarr file and a Dask task).
MAX_CHUNK_ROWS = 4096


def chunk_rows_for(seconds_per_row: float, rows: int, batch_size: int, parallel: int = 1) -> int:
    """Rows per chunk for an encoder that takes ``seconds_per_row``, over ``rows`` rows in ``parallel``.

    A few seconds of work per chunk at most, and a twentieth of a short run: finished chunks are what an
    interrupted run keeps. A multiple of ``batch_size``, since batches start at chunk boundaries."""
    whole_run = seconds_per_row * rows / max(1, parallel)
    seconds = min(CHUNK_SECONDS, whole_run / CHUNKS_PER_RUN)
    fit = seconds / seconds_per_row if seconds_per_row > 0 else float(MAX_CHUNK_ROWS)
    return max(1, int(min(fit, MAX_CHUNK_ROWS) // batch_size)) * batch_size


@dataclass
class ChunkResult:
    """What embedding one chunk changed: rows newly done and rows newly failed."""

    chunk: int
    new_done: int
    new_failed: int


@dataclass
class EmbedReport:
    """The outcome of one ``ee embed``: counts over the whole array, and what this run added to them."""

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
        """1 when a row failed (now or before) or ``--strict`` stopped the run: the data has holes."""
        return 1 if self.failed or self.stopped_early else 0

    def add(self, res: ChunkResult) -> None:
        self.new_done += res.new_done
        self.new_failed += res.new_failed
        self.chunks_run += 1


class EmbedInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``ee embed``, carrying what the store holds: finished chunks stay done."""

    def __init__(self, report: EmbedReport):
        super().__init__(report.key)
        self.report = report


@dataclass(frozen=True)
class ChunkRun:
    """How every chunk of one ``ee embed`` runs, the same in this process and on every Dask worker.

    ``threads`` None means all the CPUs this process may use (a Dask worker uses 1 instead: see
    ``cluster.py``); ``root`` is the folder relative media paths are taken from."""

    batch_size: int
    threads: int | None
    decode_timeout: float
    root: str
    strict: bool = False
    on_progress: Callable[[int], None] | None = None


def array_key(side: str, encoder: Encoder) -> str:
    """The store array of (side, encoder, output options): other options write another array."""
    return f"{side}.{options_key(encoder.name, encoder.output_options())}"


def claim_identity(arr: EmbeddingArray, ident: EncoderIdentity) -> list[str]:
    """Record the encoder's identity on a new array; refuse to mix outputs of other weights into an old one."""
    if arr.identity is None:
        arr.set_identity(ident)
        return []
    return require_same_identity(
        arr.identity,
        ident,
        f"array {arr.key}",
        "use another store, or the encoder settings it records",
        StoreError,
        labels=("stored", "now"),
    )


def check_decoding(arr: EmbeddingArray, encoder: Encoder) -> None:
    """Refuse an array whose files were decoded under other rules (an image ``background``, or rules
    since changed), before any weights load: a finished array is otherwise reused without a look."""
    recorded = arr.identity
    if recorded is None:
        return
    now = {} if encoder.decoding is None else encoder.decoding.identity()
    require_same_identity(
        recorded,
        recorded.model_copy(update={"decoding": now}),
        f"array {arr.key}",
        "its files were decoded otherwise: embed into another store, or give the decoding options it records",
        StoreError,
        labels=("stored", "now"),
    )


def decode_rows(pool: DecoderPool, refs: dict[int, MediaRef]) -> dict[int, Any]:
    """Row -> decoded item, or :class:`BadItem` with the reason (a hostile file costs its row only)."""
    rows = sorted(refs)
    return dict(zip(rows, pool.decode_all([refs[r] for r in rows]), strict=True))


def embed_chunk(
    arr: EmbeddingArray,
    encoder: Encoder,
    chunk: int,
    decoded: dict[int, Any],
    batch_size: int,
    on_rows: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Embed the rows to do of one chunk (``decoded``: row -> item or BadItem) and write the block.

    The chunk's other rows are written back as they were read. ``on_rows(n)`` hears of rows dealt with
    as each batch ends, for a progress bar that moves within a chunk."""
    lo, _ = arr.chunk_bounds(chunk)
    values, state, errors = arr.read_chunk(chunk)
    errors = [str(e) for e in errors]
    good_rows: list[int] = []
    good_items: list[Any] = []
    new_failed = 0
    for row in sorted(decoded):
        item = decoded[row]
        reason = item.reason if isinstance(item, BadItem) else check_item_or_reason(encoder, item)
        if reason is not None:
            state[row - lo], errors[row - lo] = FAILED, reason
            values[row - lo] = 0.0
            new_failed += 1
        else:
            good_rows.append(row)
            good_items.append(item)
    if on_rows is not None and new_failed:
        on_rows(new_failed)
    for start in range(0, len(good_items), batch_size):
        out = encoder.embed_checked(good_items[start : start + batch_size])
        for k, row in enumerate(good_rows[start : start + batch_size]):
            values[row - lo] = out[k]
            state[row - lo], errors[row - lo] = DONE, ""
        if on_rows is not None:
            on_rows(len(out))
    arr.write_chunk(chunk, values, state, errors)
    return ChunkResult(chunk, len(good_rows), new_failed)


def account(report: EmbedReport, res: ChunkResult, n_rows: int, run: ChunkRun) -> bool:
    """Fold one finished chunk of ``n_rows`` rows to do into the report and the progress display
    (``n_rows`` 0: :func:`embed_chunk` advanced it batch by batch).

    Returns True when the run must stop: ``--strict`` and a row of this chunk failed."""
    report.add(res)
    if run.on_progress is not None and n_rows:
        run.on_progress(n_rows)
    if run.strict and res.new_failed:
        report.stopped_early = True
        return True
    return False
