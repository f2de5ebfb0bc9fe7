"""The dataset manifest: the pairs, one JSON object per line after a header line.

A pair has an ``id`` (the key of its row in every store, forever), two sides ``a`` and ``b`` (each a
:class:`MediaRef`: a file, a moment of a video, a window of audio, or inline text), and optionally a
``label``, a ``group`` (the source it was cut from, e.g. its video: the split never divides a group) and a
``split``. Paths are relative to the manifest's folder, so a dataset folder can move as a whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import UserError, field_errors
from .files import atomic_open, decode_user_line

MANIFEST_VERSION = 1
Split = Literal["train", "val", "test"]
RefKind = Literal["image", "audio", "text", "video_frame", "video_audio"]

KIND_MODALITY: dict[str, str] = {
    "image": "image",
    "video_frame": "image",
    "audio": "audio",
    "video_audio": "audio",
    "text": "text",
}


class MediaRef(BaseModel):
    """Where one side of a pair comes from. Nothing decoded is stored: videos are pointed into by time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RefKind
    path: str | None = None  # relative to the manifest's folder (or absolute)
    text: str | None = None  # inline text (kind "text" without a path)
    t: float | None = None  # video_frame: the frame shown at this time, seconds
    start: float | None = None  # audio / video_audio: the window actually used, seconds
    end: float | None = None

    @model_validator(mode="after")
    def _check(self) -> MediaRef:
        if self.kind == "text":
            if (self.text is None) == (self.path is None):
                raise ValueError("a text ref has either 'text' or 'path'")
        elif self.path is None:
            raise ValueError(f"a {self.kind} ref needs a 'path'")
        if self.kind == "video_frame" and self.t is None:
            raise ValueError("a video_frame ref needs 't' (seconds)")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("'end' must be after 'start'")
        return self

    @property
    def modality(self) -> str:
        return KIND_MODALITY[self.kind]

    def describe(self) -> str:
        if self.kind == "text" and self.text is not None:
            return repr(self.text[:60])
        where = self.path or ""
        if self.t is not None:
            where += f"@{self.t:.2f}s"
        if self.start is not None or self.end is not None:
            where += f"[{self.start or 0:.2f}s-{'' if self.end is None else f'{self.end:.2f}'}s]"
        return where


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    a: MediaRef
    b: MediaRef
    label: str | None = None
    group: str | None = None
    split: Split | None = None

    def side(self, side: str) -> MediaRef:
        return self.a if side == "a" else self.b

    @property
    def group_key(self) -> str:
        return self.group if self.group is not None else self.id


class ManifestHeader(BaseModel):
    model_config = ConfigDict(extra="allow")

    ee_manifest: int = MANIFEST_VERSION
    a: str  # modality of side a
    b: str  # modality of side b
    source: str | None = None


@dataclass
class Manifest:
    path: Path
    header: ManifestHeader
    pairs: list[Pair]

    @property
    def root(self) -> Path:
        return self.path.parent

    def modality(self, side: str) -> str:
        if side not in ("a", "b"):
            raise UserError(f"side must be 'a' or 'b', not {side!r}")
        return getattr(self.header, side)


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line; a line that is not JSON (or not UTF-8) is a UserError
    naming it. A byte order mark before the first line is skipped, as spreadsheet programs write one."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_user_line(path, lineno, raw)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not JSON ({e.msg})") from None


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; any problem is a one-line :class:`UserError` naming the line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"manifest not found: {p}")
    pairs: list[Pair] = []
    seen: set[str] = set()
    header: ManifestHeader | None = None
    for lineno, obj in iter_jsonl(p):
        if header is None:
            if not isinstance(obj, dict) or "ee_manifest" not in obj:
                raise UserError(f"{p}:{lineno}: not an embedeverything manifest (no header line)")
            header = _validated(ManifestHeader, obj, p, lineno)
            if header.ee_manifest > MANIFEST_VERSION:
                raise UserError(
                    f"{p}: manifest format {header.ee_manifest} is newer than this embedeverything "
                    f"understands ({MANIFEST_VERSION}); upgrade embedeverything"
                )
            continue
        pair = _validated(Pair, obj, p, lineno)
        if pair.id in seen:
            raise UserError(f"{p}:{lineno}: duplicate id {pair.id!r}")
        for side in ("a", "b"):
            got = pair.side(side).modality
            if got != getattr(header, side):
                raise UserError(
                    f"{p}:{lineno}: side {side} is {got} but the manifest says {getattr(header, side)}"
                )
        seen.add(pair.id)
        pairs.append(pair)
    if header is None:
        raise UserError(f"{p}: empty manifest")
    return Manifest(p, header, pairs)


def _validated(model: type[BaseModel], obj: object, p: Path, lineno: int):  # type: ignore[no-untyped-def]
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise UserError(f"{p}:{lineno}: {field_errors(e, first_only=True)}") from None


def json_line(obj: Any) -> str:
    """One JSONL line, non-ASCII text as UTF-8. A file name that is not UTF-8 reaches us with lone surrogates
    (``os.fsdecode``), which UTF-8 cannot hold: they are written as JSON escapes (``"\\udce9"``), which
    ``json.loads`` turns back into the same string, so the path opens the same file again."""
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in line)
    return line


def write_manifest(
    path: str | os.PathLike[str], pairs: Iterable[Pair], a: str, b: str, source: str | None = None
) -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a manifest."""
    p = Path(path)
    header = ManifestHeader(a=a, b=b, source=source)
    with atomic_open(p) as f:
        f.write(json_line(header.model_dump(mode="json", exclude_none=True)) + "\n")
        for pair in pairs:
            f.write(json_line(pair.model_dump(mode="json", exclude_none=True)) + "\n")
    return p
