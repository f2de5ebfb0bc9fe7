"""What an index is and records: its folder, its settings, and the facts that make it current or stale.

An index is a folder (default ``ADAPTER_DIR/index``, on local disk even for a remote store) holding a
LanceDB database with one table per side (``side_a``, ``side_b``: a query searches one side, and one
table per side keeps an ANN index's partitions to that side's vectors) and ``ee-index.json``, the
index's own record: the adapter's file hash, the store, each side's array (key and identity hash) and
each ANN index's probes and measured recall.
When any of those differs from what is asked about, the index is stale: ``ee index`` rebuilds it and
``ee query`` searches exactly, saying why. Which rows it holds is read from the tables themselves, so a
run cut short never leaves a record that claims rows the tables lack.

Search settings (docs/search.md has the measurement): below :data:`ANN_MIN_ROWS` rows a side is searched
exactly (LanceDB's flat scan); from there an IVF_FLAT index, probed at least :data:`NPROBES` partitions
deep and deeper where ``ee index``'s recall check asks for it (``lookup.calibrate``). IVF_PQ's
compressed codes lost most true neighbours on clustered data even with a refine step, while IVF_FLAT
keeps full vectors in its partitions and so only a partition left unprobed can miss a hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import file_digest, write_text_atomic
from ..locks import exclusive_lock
from ..store import EmbeddingArray, local_path

INDEX_FORMAT = 1
STATE_FILE = "ee-index.json"
LOCK_FILE = ".ee-index.lock"
SEARCH_EXTRA = "pip install 'embedeverything[search]'"
#: a side with fewer rows is searched exactly; from here on an ANN index pays (docs/search.md)
ANN_MIN_ROWS = 50_000
INDEX_TYPE = "IVF_FLAT"
#: rows per IVF partition (LanceDB's default): about one partition per this many rows
PARTITION_ROWS = 4096
#: partitions probed at the least; ``ee index`` doubles it until its recall check passes
NPROBES = 20
MAX_NPROBES = 4096
#: recall@10 an ANN index must reach on its own rows, or it is probed deeper
TARGET_RECALL = 0.97
CALIBRATION_QUERIES = 64
SIDES = ("a", "b")


def lancedb() -> Any:
    """The lancedb module, or the one-line error naming the extra that brings it."""
    # LanceDB's own log lines (a table "will be created") would reach the user's terminal otherwise
    os.environ.setdefault("LANCE_LOG", "error")
    try:
        import lancedb as module
    except ImportError:
        raise UserError(f"the search index needs lancedb: {SEARCH_EXTRA}") from None
    return module


def lancedb_installed() -> bool:
    try:
        lancedb()
    except UserError:
        return False
    return True


def default_index(adapter_path: str | os.PathLike[str]) -> Path:
    """``index/`` beside the adapter: local, whatever the store's location."""
    return Path(adapter_path).parent / "index"


def table_name(side: str) -> str:
    return f"side_{side}"


def store_key(location: str) -> str:
    """One spelling per store: an absolute normalised path on local disk, the URL otherwise."""
    path = local_path(location)
    return os.path.normpath(os.path.abspath(path)) if path is not None else location.rstrip("/")


def array_record(arr: EmbeddingArray) -> dict[str, str]:
    ident = arr.identity
    blob = json.dumps(None if ident is None else ident.model_dump(mode="json"), sort_keys=True)
    return {"key": arr.key, "identity": hashlib.sha256(blob.encode()).hexdigest()[:16]}


def current_record(
    adapter_path: str | os.PathLike[str], store_location: str, arrays: dict[str, EmbeddingArray]
) -> dict[str, Any]:
    """What an index of these arrays through this adapter records (and is compared against)."""
    return {
        "ee_index": INDEX_FORMAT,
        "adapter_sha256": file_digest(adapter_path),
        "store": store_key(store_location),
        "arrays": {s: array_record(a) for s, a in arrays.items()},
    }


def read_record(index_dir: Path) -> dict[str, Any] | None:
    path = index_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if not isinstance(record, dict) or int(record.get("ee_index", 0)) > INDEX_FORMAT:
        raise UserError(f"{path} is not an index this embedeverything reads; rebuild it with `ee index`")
    return record


def write_record(index_dir: Path, record: dict[str, Any]) -> None:
    write_text_atomic(index_dir / STATE_FILE, json.dumps(record, indent=2, sort_keys=True))


def whole_staleness(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why nothing in the index ``old`` holds is valid for ``new``: another adapter or another store."""
    reasons = []
    if old.get("adapter_sha256") != new["adapter_sha256"]:
        reasons.append("the adapter changed since it was indexed")
    if old.get("store") != new["store"]:
        reasons.append(f"it indexes store {old.get('store')}, not {new['store']}")
    return reasons


def side_staleness(old: dict[str, Any], new: dict[str, Any], side: str) -> str | None:
    """Why side ``side``'s table is no longer valid (its array changed), or None."""
    was = old.get("arrays", {}).get(side)
    now = new["arrays"][side]
    if was is None:
        return None
    if was["key"] != now["key"]:
        return f"side {side} now reads array {now['key']}, not {was['key']}"
    if was["identity"] != now["identity"]:
        return f"the encoder identity of array {now['key']} changed"
    return None


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """One ``ee index`` per index at a time; a second is refused naming the first one's pid."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(index_dir / LOCK_FILE, f"index {index_dir} is being built by"):
        yield
