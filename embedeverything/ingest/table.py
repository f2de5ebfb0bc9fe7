"""A CSV or JSONL table with one column per side (file paths or inline text), plus optional columns.

Columns: ``a`` and ``b`` (default: columns named a and b, else the first two that are not id,
label, split or group), ``label``, ``split``, ``id`` (default: columns of those names when present);
``ee ingest table`` takes them as ``--a/--b/--label/--split/--id`` and ``ee pair`` as ``--a-col`` and so on,
and every message names the caller's flags (``flags``). A column is a column of image or audio files when most of its values end in such an
extension, of text files when they end in .txt, and inline text otherwise. Paths are relative to the
table's folder. Without an id column a row's id is its two values (long text shortened with a hash), so
ids survive reordering and appending rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS, VIDEO_EXTENSIONS
from ..errors import BadItem, UserError, shown
from ..files import read_user_text
from ..manifest import MediaRef, Pair, iter_jsonl
from .common import Failure, IngestOptions, IngestResult, finish, probe_files, ref_path
from .vggsound import parse_split

RESERVED = ("id", "label", "split", "group")

#: the flags that choose each column, as ``ee ingest table`` names them; a caller with other names
#: (``ee pair``: ``--a-col``...) passes its own, so that a hint names flags the user can give
TABLE_FLAGS = {"a": "--a", "b": "--b", "label": "--label", "split": "--split", "id": "--id"}


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line number, row)]) of a .csv or .jsonl file; a malformed file is a UserError."""
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson"):
        columns: dict[str, None] = {}
        for lineno, obj in iter_jsonl(path):
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object per line")
            columns.update(dict.fromkeys(obj))
            rows.append((lineno, obj))
        return list(columns), rows
    if suffix in (".csv", ".tsv"):
        text = io.StringIO(read_user_text(path), newline="")
        reader = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
        cols = [c for c in (reader.fieldnames or []) if c]
        for rec in reader:
            rows.append((reader.line_num, {k: v for k, v in rec.items() if k}))
        return cols, rows
    raise UserError(f"{path}: a table must be .csv, .tsv or .jsonl")


def column_kind(values: list[str]) -> str:
    """image / audio / text (files) by the extension most values have, else inline text ('inline')."""
    counts: Counter[str] = Counter()
    for v in values:
        ext = Path(v.strip()).suffix.lower() if v.strip() and "\n" not in v else ""
        if ext in IMAGE_EXTENSIONS:
            counts["image"] += 1
        elif ext in AUDIO_EXTENSIONS:
            counts["audio"] += 1
        elif ext in TEXT_EXTENSIONS:
            counts["text"] += 1
        elif ext in VIDEO_EXTENSIONS:
            counts["video"] += 1
    if counts:
        kind, n = counts.most_common(1)[0]
        if n * 2 > len(values):
            return kind
    return "inline"


def short(value: str, limit: int = 60) -> str:
    if len(value) <= limit:
        return value
    return value[:limit] + "~" + hashlib.sha1(value.encode()).hexdigest()[:8]


def ingest_table(
    table: str | Path,
    out: str | Path | None = None,
    *,
    a: str | None = None,
    b: str | None = None,
    label: str | None = None,
    split: str | None = None,
    id: str | None = None,
    opts: IngestOptions | None = None,
    flags: Mapping[str, str] | None = None,
) -> IngestResult:
    """A CSV/JSONL table -> a manifest; see the module docstring. ``flags``: the caller's names of the
    column options, for its messages (default :data:`TABLE_FLAGS`)."""
    table = Path(table)
    if not table.is_file():
        raise UserError(f"table not found: {table}")
    opts = opts or IngestOptions()
    manifest = Path(out) if out is not None else table.with_name(table.stem + ".manifest.jsonl")
    columns, rows = read_table(table)
    if not rows:
        raise UserError(f"{table}: no rows")
    given = {"a": a, "b": b, "label": label, "split": split, "id": id}
    cols = _Columns.pick(table, columns, given, {**TABLE_FLAGS, **(flags or {})})
    kinds = cols.kinds(rows)
    modality = {c: ("text" if k == "inline" else k) for c, k in kinds.items()}
    result = IngestResult(
        source=f"table:{table}", a=modality[cols.a], b=modality[cols.b], manifest=manifest, inputs=len(rows)
    )
    reader = _Reader(table, cols, kinds, result, opts)
    candidates: list[Candidate] = []
    for lineno, row in rows:
        pair, files, bad, row_id = reader.pair_of(row)
        if bad is not None:
            if reader.fail(lineno, bad, row_id or None):
                return finish(result)
            continue
        assert pair is not None
        candidates.append((lineno, pair, files))
    unique = reader.first_of_each_id(candidates)
    if unique is not None:
        reader.probe(unique)
    return finish(result)


#: (line number, pair, files to probe as (path, kind))
Candidate = tuple[int, Pair, list[tuple[Path, str]]]


@dataclass
class _Columns:
    """The columns a table's pairs are read from."""

    a: str
    b: str
    label: str | None
    split: str | None
    id: str | None
    group: str | None

    @classmethod
    def pick(
        cls,
        table: Path,
        columns: list[str],
        given: Mapping[str, str | None],
        flags: Mapping[str, str],
    ) -> _Columns:
        """The columns ``given`` (by role: a, b, label, split, id), else the defaults of the module
        docstring; a name not in the table is a UserError naming its flag and the columns there are."""

        def pick(role: str) -> str | None:
            name = given.get(role)
            if name is not None:
                if name not in columns:
                    raise UserError(
                        f"{flags[role]} {name!r} is not a column of {table} (columns: {', '.join(columns)})"
                    )
                return name
            return role if role in columns else None

        label_col, split_col, id_col = pick("label"), pick("split"), pick("id")
        rest = [c for c in columns if c not in RESERVED and c not in (label_col, split_col, id_col)]
        col_a = pick("a") or (rest[0] if rest else None)
        col_b = pick("b") or next((c for c in rest if c != col_a), None)
        if col_a is None or col_b is None or col_a == col_b:
            raise UserError(
                f"{table}: need two columns for the sides; give {flags['a']} COL {flags['b']} COL "
                f"(columns: {', '.join(columns)})"
            )
        group_col = "group" if "group" in columns else None
        return cls(col_a, col_b, label_col, split_col, id_col, group_col)

    def kinds(self, rows: list[tuple[int, dict[str, Any]]]) -> dict[str, str]:
        """Each side column's kind (see :func:`column_kind`); videos are refused: they have their own
        commands, which cut them into frames and audio windows."""
        kinds: dict[str, str] = {}
        for col in (self.a, self.b):
            k = column_kind([str(r.get(col) or "") for _, r in rows])
            if k == "video":
                raise UserError(
                    f"column {col!r} holds videos: use `ee ingest videos` or `ee ingest vggsound`"
                )
            kinds[col] = k
        return kinds


@dataclass
class _Reader:
    """Rows -> pairs, recording each row that gives none in the result."""

    table: Path
    cols: _Columns
    kinds: dict[str, str]
    result: IngestResult
    opts: IngestOptions

    @property
    def root(self) -> Path:
        return self.result.manifest.parent

    def fail(self, lineno: int, reason: str, row_id: str | None = None) -> bool:
        """Record a failed row; True when the run stops there (``--strict``)."""
        self.result.failures.append(Failure(f"{self.table.name}:{lineno}", reason, row_id))
        self.result.stopped_early = self.opts.strict
        return self.opts.strict

    def pair_of(self, row: dict[str, Any]) -> tuple[Pair | None, list[tuple[Path, str]], str | None, str]:
        """(pair, files to probe, why the row gives no pair, the row's id as far as it is known)."""
        refs: dict[str, MediaRef] = {}
        files: list[tuple[Path, str]] = []
        keys: list[str] = []
        bad = None
        for col in (self.cols.a, self.cols.b):
            got = self.side(row, col)
            if isinstance(got, str):
                bad = got
                break
            refs[col], key, file = got
            keys.append(key)
            files.extend(file)
        id_col, split_col = self.cols.id, self.cols.split
        row_id = str(row.get(id_col) or "").strip() if id_col else "|".join(keys)
        if bad is None and id_col and not row_id:
            bad = f"empty id in column {id_col!r}"
        try:
            row_split = parse_split(str(row.get(split_col) or "")) if split_col else None
        except ValueError as e:
            bad = bad or str(e)
            row_split = None
        if bad is not None:
            return None, files, bad, row_id
        lab = row.get(self.cols.label) if self.cols.label else None
        grp = row.get(self.cols.group) if self.cols.group else None
        pair = Pair(
            id=row_id,
            a=refs[self.cols.a],
            b=refs[self.cols.b],
            label=None if lab in (None, "") else str(lab),
            group=None if grp in (None, "") else str(grp),
            split=row_split,
        )
        return pair, files, None, row_id

    def side(self, row: dict[str, Any], col: str) -> tuple[MediaRef, str, list[tuple[Path, str]]] | str:
        """(ref, its part of a made-up id, the file to probe) of one cell, or why it gives none."""
        raw = row.get(col)
        value = "" if raw is None else str(raw)
        if not value.strip():
            return f"empty value in column {col!r}"
        kind = self.kinds[col]
        if kind == "inline":
            return MediaRef(kind="text", text=value), short(value.strip()), []
        path = Path(value.strip())
        full = path if path.is_absolute() else self.table.parent / path
        if column_kind([value]) != kind:
            return f"column {col!r} holds {kind} files, but {value.strip()!r} is not one"
        ref = MediaRef(kind=kind, path=ref_path(full, self.root))  # type: ignore[arg-type]
        return ref, value.strip(), [(full, kind)]

    def first_of_each_id(self, candidates: list[Candidate]) -> list[Candidate] | None:
        """The candidates without repeated ids (None when ``--strict`` stops at one), before probing: a
        row dropped anyway need not be read."""
        first_line: dict[str, int] = {}
        unique: list[Candidate] = []
        for lineno, pair, files in candidates:
            if pair.id in first_line:
                reason = f"duplicate id {pair.id!r} (first on line {first_line[pair.id]})"
                if self.fail(lineno, reason, pair.id):
                    return None
                continue
            first_line[pair.id] = lineno
            unique.append((lineno, pair, files))
        return unique

    def probe(self, candidates: list[Candidate]) -> None:
        """Probe every candidate's files; the pairs whose files all decode go into the result."""
        to_probe: list[tuple[Path, str]] = []
        owner: list[int] = []
        for k, (_, _, files) in enumerate(candidates):
            to_probe.extend(files)
            owner.extend([k] * len(files))
        failed: set[int] = set()
        for i, got in probe_files(to_probe, self.opts):
            if isinstance(got, BadItem):
                k = owner[i]
                failed.add(k)
                lineno, pair, _ = candidates[k]
                # the file after the reason, not before it: failures are counted by the reason's head
                path = to_probe[i][0]
                named = shown(str(path)) in got.reason
                reason = got.reason if named else f"{got.reason} (file {ref_path(path, self.root)})"
                if self.fail(lineno, reason, pair.id):
                    return
        self.result.pairs = [p for k, (_, p, _) in enumerate(candidates) if k not in failed]
