"""The VGG-Sound CSV (youtube id, start seconds, label, split) plus a folder of local clips.

Download tools name clips differently; the default name is ``{id}_{start:06d}.mp4`` (the layout of the
common downloaders), ``--pattern`` sets another (fields: ``id``, ``start``, ``end``, ``label``,
``split``). A clip not found under that name is also looked up by its file name anywhere below the
folder, since tools often sort clips into train/ and test/. Labels and the split are carried over.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..decode import VIDEO_EXTENSIONS
from ..errors import UserError
from ..files import read_user_text
from ..manifest import Split
from .common import Failure, IngestOptions, IngestResult, check_folder, find_files, finish, ref_path
from .videos import FramePlan, ingest_video_files

DEFAULT_PATTERN = "{id}_{start:06d}.mp4"
CLIP_SECONDS = 10  # VGG-Sound clips are 10 s from the start time

SPLITS: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def parse_split(value: str) -> Split | None:
    """A split name as our train/val/test, or None when empty; UserError names an unknown one."""
    v = value.strip().lower()
    if not v:
        return None
    if v not in SPLITS:
        raise ValueError(f"unknown split {value!r} (expected train, val or test)")
    return SPLITS[v]


def read_vggsound_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each data row; a header line, if any, is skipped."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with io.StringIO(read_user_text(path), newline="") as f:
        for lineno, rec in enumerate(csv.reader(f), 1):
            if not rec or not any(c.strip() for c in rec):
                continue
            if len(rec) < 2:
                raise UserError(
                    f"{path}:{lineno}: expected 'youtube_id,start_seconds,label,split', got {','.join(rec)!r}"
                )
            try:
                start = float(rec[1])
            except ValueError:
                if not rows and lineno == 1:  # a header line
                    continue
                raise UserError(f"{path}:{lineno}: start seconds {rec[1]!r} is not a number") from None
            rows.append(
                (
                    lineno,
                    {
                        "id": rec[0].strip(),
                        "start": start,
                        "label": rec[2].strip() if len(rec) > 2 else "",
                        "split": rec[3].strip() if len(rec) > 3 else "",
                    },
                )
            )
    return rows


def clip_name(pattern: str, row: dict[str, Any]) -> str:
    start = row["start"]
    s = int(start) if float(start).is_integer() else start
    try:
        return pattern.format(
            id=row["id"], start=s, end=s + CLIP_SECONDS, label=row["label"], split=row["split"]
        )
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(
            f"bad --pattern {pattern!r} ({type(e).__name__}: {e}); fields are id, start, end, label, split"
        ) from None


def ingest_vggsound(
    csv_path: str | Path,
    folder: str | Path,
    out: str | Path | None = None,
    pattern: str = DEFAULT_PATTERN,
    plan: FramePlan | None = None,
    opts: IngestOptions | None = None,
) -> IngestResult:
    """VGG-Sound's CSV + local clips -> a manifest of (frame, audio window) pairs with labels and splits."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"CSV not found: {csv_path}")
    folder = check_folder(Path(folder), "clip folder")
    plan = plan or FramePlan()
    opts = opts or IngestOptions()
    manifest = Path(out) if out is not None else folder / "manifest.jsonl"
    result = IngestResult(source=f"vggsound:{csv_path}", a="image", b="audio", manifest=manifest)
    rows = read_vggsound_csv(csv_path)
    by_name: dict[str, Path] | None = None
    videos: list[tuple[Path, dict[str, Any]]] = []
    for lineno, row in rows:
        name = clip_name(pattern, row)
        try:
            split = parse_split(row["split"])
        except ValueError as e:
            result.inputs += 1
            result.failures.append(Failure(f"{csv_path.name}:{lineno}", str(e)))
            if opts.strict:
                result.stopped_early = True
                break
            continue
        clip = folder / name
        if not clip.is_file():
            if by_name is None:  # built once, only when a clip is not where the pattern says
                by_name = {}
                for p in find_files(folder, VIDEO_EXTENSIONS):
                    by_name.setdefault(p.name, p)
            found = by_name.get(Path(name).name)
            if found is None:
                result.inputs += 1
                result.failures.append(
                    Failure(
                        ref_path(clip, manifest.parent),
                        f"clip not found (CSV line {lineno}; name pattern {pattern!r}, --pattern sets another)",
                    )
                )
                if opts.strict:
                    result.stopped_early = True
                    break
                continue
            clip = found
        videos.append((clip, {"label": row["label"] or None, "split": split}))
    if result.stopped_early:
        return finish(result)
    return ingest_video_files(result, folder, videos, plan, opts)
