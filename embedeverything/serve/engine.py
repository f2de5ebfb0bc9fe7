"""What ``ee serve`` answers, apart from HTTP: queries into the shared space, one hit list per indexed
side, and each hit's whole pair with its media.

The index's tables are kept open (opening one costs more than a query) on a connection that checks for
new versions on every read, so rows that ``ee index`` adds while the server runs are found by the next
query; a rebuilt index (its record rewritten) is reopened. Media are looked up by side and row in the
manifest, never by a path a client sent, and decoded in the sandbox (:mod:`.sandbox`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import load_adapter
from ..decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, resolve
from ..errors import BadItem, UserError
from ..evaluate.data import matching_array, resolve_store_location
from ..inference import embed_items, file_kind, find_text_tower, side_encoder, side_for_modality
from ..manifest import MediaRef, read_manifest
from ..renditions import MAX_AUDIO_S
from ..search.build import manifest_path
from ..search.lookup import nearest_one
from ..search.state import (
    NPROBES,
    SIDES,
    STATE_FILE,
    current_record,
    default_index,
    lancedb,
    read_record,
    table_name,
    whole_staleness,
)
from ..store import DONE, Store
from .sandbox import QueryError, Sandbox

PER_PAGE = 10
MAX_HITS = 500  # hits one list can page through
QUERY_CACHE = 64  # recent queries kept for paging
UPLOAD_KINDS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "video": VIDEO_EXTENSIONS}
HIT_COLUMNS = ("id", "label", "split")


@dataclass
class Query:
    vector: np.ndarray  # unit, in the shared space
    side: str  # the side it went through
    how: str
    what: str  # said on the page


class Catalog:
    """Row -> id -> the manifest's media reference; reread when a row or id it lacks is asked for."""

    REFRESH_S = 2.0

    def __init__(self, store: Store, manifest: Path):
        self.store, self.manifest = store, manifest
        self._lock = threading.Lock()
        self._loaded = -1e9
        self.ids: np.ndarray = np.array([], object)
        self.pairs: dict[str, Any] = {}
        self.root = manifest.parent
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._loaded < self.REFRESH_S:
                return
            self._loaded = time.monotonic()
            m = read_manifest(self.manifest)
            self.store = Store.open(self.store.location, read_only=True)
            self.ids = self.store.rows()["id"]
            self.pairs, self.root = {p.id: p for p in m.pairs}, m.root

    def ref(self, side: str, row: int, id_: str | None = None) -> MediaRef | None:
        for attempt in (0, 1):
            ok = 0 <= row < len(self.ids) and (id_ is None or str(self.ids[row]) == id_)
            if ok and str(self.ids[row]) in self.pairs:
                return self.pairs[str(self.ids[row])].side(side)
            if attempt == 0:
                self.refresh()
        return None


class Engine:
    """The adapter, its index and store, the encoders queries need (loaded once), and the sandbox."""

    def __init__(
        self,
        adapter_path: str | os.PathLike[str],
        store_location: str | None = None,
        index: str | os.PathLike[str] | None = None,
        manifest: str | os.PathLike[str] | None = None,
        sandbox: Sandbox | None = None,
    ):
        self.adapter_path = Path(adapter_path)
        self.adapter = load_adapter(self.adapter_path)
        self.location = resolve_store_location(self.adapter_path, self.adapter, store_location)
        self.index_dir = Path(index) if index is not None else default_index(self.adapter_path)
        store = Store.open(self.location, read_only=True)
        self.arrays = {s: matching_array(store, s, getattr(self.adapter.config, s)) for s in SIDES}
        self.catalog = Catalog(store, manifest_path(self.location, manifest))
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self._tables: dict[str, Any] = {}
        self._record_stamp: tuple[int, int] | None = None
        self.record: dict[str, Any] = {}
        self._check_record()  # before connecting: LanceDB makes the folder it is pointed at
        self._db = lancedb().connect(str(self.index_dir), read_consistency_interval=timedelta(0))
        self._embed_lock = threading.Lock()
        self._encoders: dict[str, Any] = {}
        self._queries: OrderedDict[str, Query] = OrderedDict()
        self._queries_lock = threading.Lock()
        self.text_how, self.text_off = self._text_route()

    def _check_record(self) -> None:
        """(Re)read the index record when it changed on disk; a record for another adapter or store
        is refused, as ``ee query`` refuses to use it."""
        path = self.index_dir / STATE_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UserError(
                f"no index at {self.index_dir}: run `ee index {self.adapter_path}` first"
            ) from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._record_stamp:
            return
        record = read_record(self.index_dir) or {}
        stale = whole_staleness(record, current_record(self.adapter_path, self.location, self.arrays))
        if stale:
            raise UserError(
                f"index {self.index_dir} is stale ({'; '.join(stale)}): run `ee index {self.adapter_path}`"
            )
        self.record, self._record_stamp, self._tables = record, stamp, {}

    def table(self, side: str) -> Any:
        if side not in self._tables:
            try:
                self._tables[side] = self._db.open_table(table_name(side))
            except (ValueError, FileNotFoundError):
                return None
        return self._tables[side]

    def sides(self) -> list[str]:
        """The indexed sides, each searched on its own (a merged list would fill with the query's own
        modality: the modality gap)."""
        self._check_record()
        return [s for s in SIDES if s in self.record.get("arrays", {}) and self.table(s) is not None]

    def _text_route(self) -> tuple[str, str]:
        """(how words are embedded, "") or ("", why the text box is off)."""
        try:
            tower = find_text_tower(self.adapter)
        except UserError as e:
            return "", str(e)
        except Exception as e:  # weights that will not load: the page still searches by file
            return "", f"the text encoder did not load ({type(e).__name__}: {e})"
        self._encoders["text"] = (tower.side, tower.encoder)
        return tower.how, ""

    def info(self) -> dict[str, Any]:
        """What the page shows before any query: the sides, their row counts, what a query may be."""
        cfg = self.adapter.config
        sides = {}
        for s in self.sides():
            ident = getattr(cfg, s).identity
            done = int((self.arrays[s].state() == DONE).sum())
            sides[s] = {
                "encoder": ident.name,
                "modality": ident.modality,
                "indexed": int(self.table(s).count_rows()),
                "embedded": done,
            }
        takes = {getattr(cfg, s).identity.modality for s in SIDES}
        uploads = [k for k in ("image", "audio") if k in takes] + (
            ["video"] if takes & {"image", "audio"} else []
        )
        return {
            "adapter": self.adapter_path.name,
            "sides": sides,
            "text": {"enabled": not self.text_off, "how": self.text_how, "reason": self.text_off},
            "uploads": {k: sorted(UPLOAD_KINDS[k]) for k in uploads},
            "per_page": PER_PAGE,
        }

    def _encoder(self, side: str) -> Any:
        if side not in self._encoders:
            self._encoders[side] = (side, side_encoder(self.adapter, side))
        return self._encoders[side][1]

    def _remember(self, vector: np.ndarray, side: str, how: str, what: str) -> str:
        unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
        token = secrets.token_urlsafe(12)
        with self._queries_lock:  # requests run in threads of their own
            self._queries[token] = Query(unit.astype(np.float32), side, how, what)
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return token

    def text_query(self, words: str) -> str:
        """Embed words through the text tower; returns the query's token."""
        words = words.strip()
        if not words:
            raise QueryError(400, "type some words to search for")
        if self.text_off:
            raise QueryError(400, f"text search is off: {self.text_off}")
        side, enc = self._encoders["text"]
        with self._embed_lock:
            z = embed_items(self.adapter, side, enc, [words])[0]
        return self._remember(z, side, self.text_how, words)

    def file_query(self, path: Path, name: str, pick: str | None) -> str:
        """Embed an uploaded file (decoded in the sandbox); returns the query's token."""
        kind = upload_kind(name)
        if kind == "video":
            if pick not in ("frame", "audio"):
                raise QueryError(400, "a video is searched by its frame or its audio: pick one")
            modality, kind = ("image", "video_frame") if pick == "frame" else ("audio", "video_audio")
        else:
            modality = kind
        try:
            side = side_for_modality(self.adapter, modality)
        except UserError as e:
            raise QueryError(400, str(e)) from None
        enc = self._encoder(side)
        item = self.sandbox.upload(path, kind, enc.decoding, name)
        with self._embed_lock:
            try:
                z = embed_items(self.adapter, side, enc, [item])[0]
            except UserError as e:
                raise QueryError(422, str(e)) from None
        shown = name if kind in ("image", "audio") else f"{name} ({pick})"
        return self._remember(z, side, f"{enc.name} (side {side})", shown)

    def search(self, token: str, page: int = 0) -> dict[str, Any]:
        """One page of hits per indexed side for a remembered query."""
        with self._queries_lock:
            q = self._queries.get(token)
        if q is None:
            raise QueryError(404, "that query has expired: search again")
        if page < 0 or page * PER_PAGE >= MAX_HITS:
            raise QueryError(400, f"page must be between 0 and {MAX_HITS // PER_PAGE - 1}")
        lists = [self._side_hits(s, q, page) for s in self.sides()]
        self._fill_text(lists)
        return {"token": token, "query": q.what, "through": q.how, "page": page, "lists": lists}

    def _side_hits(self, side: str, q: Query, page: int) -> dict[str, Any]:
        table = self.table(side)
        k = (page + 1) * PER_PAGE + 1
        nprobes = int((self.record.get("search", {}).get(side) or {}).get("nprobes", NPROBES))
        try:
            scores, rows, extra = nearest_one(table, q.vector, k, nprobes, HIT_COLUMNS)
        except (ValueError, OSError, RuntimeError):  # rebuilt under us: reopen once
            self._tables.pop(side, None)
            scores, rows, extra = nearest_one(self.table(side), q.vector, k, nprobes, HIT_COLUMNS)
        lo = page * PER_PAGE
        ident = getattr(self.adapter.config, side).identity
        hits = [
            {
                "rank": lo + i + 1,
                "row": int(r),
                "score": round(float(s), 4),
                **{c: str(e[c]) for c in HIT_COLUMNS},
                "pair": {p: self._media(p, int(r), str(e["id"])) for p in SIDES},
            }
            for i, (s, r, e) in enumerate(
                zip(scores[lo : lo + PER_PAGE], rows[lo:], extra[lo:], strict=False)
            )
        ]
        return {
            "side": side,
            "encoder": ident.name,
            "modality": ident.modality,
            "rows": int(table.count_rows()),
            "hits": hits,
            "more": len(rows) > lo + PER_PAGE and lo + PER_PAGE < MAX_HITS,
        }

    def _media(self, side: str, row: int, id_: str) -> dict[str, Any]:
        """What the page shows of one side of a pair: the kind, file and time, and where to get it."""
        ref = self.catalog.ref(side, row, id_)
        if ref is None:
            return {"kind": "unknown", "missing": True}
        out: dict[str, Any] = {"kind": ref.kind, "missing": False}
        if ref.path is not None:
            out["file"] = ref.path
            out["missing"] = not resolve(ref, self.catalog.root).is_file()
        for f in ("t", "start", "end"):
            if getattr(ref, f) is not None:
                out[f] = getattr(ref, f)
        if ref.modality == "image":
            out["src"] = f"/media/{side}/{row}.jpg"
        elif ref.modality == "audio":
            out["src"] = f"/media/{side}/{row}.wav"
            if ref.start is not None and ref.end is not None:
                out["duration"] = round(min(ref.end - ref.start, MAX_AUDIO_S), 3)
        elif ref.kind == "text":
            out["text"] = ref.text
            out["_ref"] = ref
        return out

    def _fill_text(self, lists: list[dict[str, Any]]) -> None:
        """Text sides kept in files are read in one sandbox call per page."""
        todo = [m for lst in lists for h in lst["hits"] for m in h["pair"].values() if "_ref" in m]
        need = [m for m in todo if m["text"] is None and not m["missing"]]
        for m, words in zip(
            need, self.sandbox.texts([m["_ref"] for m in need], self.catalog.root), strict=True
        ):
            m["text"] = words.reason if isinstance(words, BadItem) else words
        for m in todo:
            del m["_ref"]

    def media(self, side: str, row: int, ext: str) -> bytes | None:
        """A hit's thumbnail (jpg) or audio window (wav), re-encoded in the sandbox; None: no such media."""
        ref = self.catalog.ref(side, row)
        if ref is None or ref.modality != {"jpg": "image", "wav": "audio"}[ext]:
            return None
        return self.sandbox.render("thumbnail" if ext == "jpg" else "window", ref, self.catalog.root)

    def close(self) -> None:
        self.sandbox.close()


def upload_kind(name: str) -> str:
    """image, audio or video, from an uploaded file's name (as ``ee query`` reads a file's kind); anything
    else is refused."""
    try:
        kind = file_kind(Path(name))
    except UserError:
        kind = ""
    if kind not in UPLOAD_KINDS:
        ext = Path(name).suffix.lower()
        known = ", ".join(sorted(IMAGE_EXTENSIONS | AUDIO_EXTENSIONS | VIDEO_EXTENSIONS))
        raise QueryError(415, f"cannot search by a {ext or 'nameless'} file; known kinds: {known}")
    return kind
