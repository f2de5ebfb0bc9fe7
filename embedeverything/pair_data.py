"""What ``ee pair`` reads from ``--data``: which kind of data it is, what its ingest depends on, and the
ingest itself with ``ee pair``'s own flag names in every hint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

TABLE_COLUMNS = ("a", "b", "label", "split", "id")
#: ``ee pair``'s names of the table column options (its ``--a``/``--b`` are encoders)
PAIR_TABLE_FLAGS = {role: f"--{role}-col" for role in TABLE_COLUMNS}
VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"}
KINDS = ("videos", "vggsound", "pairs", "table")
#: the kinds of data each of ``ee pair``'s ingest settings means something for
FLAG_KINDS: dict[str, tuple[str, ...]] = {
    "frames": ("videos", "vggsound"),
    "every": ("videos", "vggsound"),
    "window": ("videos", "vggsound"),
    "pattern": ("vggsound",),
    "clips": ("vggsound",),
    **{f"{role}_col": ("table",) for role in TABLE_COLUMNS},
}


def detect_kind(data: Path, clips: Path | None) -> str:
    """videos (a folder holding video files), pairs (a folder of files sharing stems), vggsound or table."""
    if not data.exists():
        raise UserError(f"--data {data} does not exist")
    if data.is_dir():
        for p in data.rglob("*"):
            if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                return "videos"
        return "pairs"
    if clips is not None:
        return "vggsound"
    if data.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return "table"
    raise UserError(f"cannot tell what kind of data {data} is; give --kind videos|vggsound|pairs|table")


def check_flags(run: Any, kind: str) -> None:
    """Refuse, before any work, the ingest flags given for data they do nothing for: a flag silently
    ignored reads as a setting that took effect. Only flags given count (their defaults are None)."""
    if kind not in KINDS:
        raise UserError(f"unknown --kind {kind!r}; expected {', '.join(KINDS[:-1])} or {KINDS[-1]}")
    if kind == "vggsound" and run.clips is None:
        raise UserError("VGG-Sound data needs --clips DIR (the folder of downloaded clips)")
    given = {k: v for k, v in run.ingest_options.items() if v is not None}
    if run.clips is not None:
        given["clips"] = run.clips
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, kinds in FLAG_KINDS.items():
        if name in given and kind not in kinds:
            flag = PAIR_TABLE_FLAGS[name[:-4]] if name.endswith("_col") else f"--{name}"
            groups.setdefault(kinds, []).append(flag)
    if groups:
        parts = [f"{', '.join(flags)}: for {' or '.join(kinds)} data only" for kinds, flags in groups.items()]
        how = "" if run.kind else " (as detected; --kind says otherwise)"
        raise UserError(f"{'; '.join(parts)}, and {run.data} is {kind} data{how}")


def listing(data: Path, clips: Path | None) -> list[Any]:
    """What ingestion depends on, cheaply: file names, sizes and times (a grown folder re-ingests)."""
    roots = [data] + ([clips] if clips is not None else [])
    out: list[Any] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name.startswith("manifest") or ".zarr" in p.parts[-2:]:
                continue
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
    return out


def ingest_data(run: Any, kind: str, manifest: Path) -> Any:
    from . import ingest as ing

    opts = ing.IngestOptions()
    io = dict(run.ingest_options)
    if kind == "videos":
        plan = ing.FramePlan(
            **{k: v for k, v in io.items() if k in ("frames", "every", "window") and v is not None}
        )
        return ing.ingest_videos(run.data, manifest, plan, opts)
    if kind == "vggsound":
        plan = ing.FramePlan(
            **{k: v for k, v in io.items() if k in ("frames", "every", "window") and v is not None}
        )
        kw = {"pattern": io["pattern"]} if io.get("pattern") else {}
        return ing.ingest_vggsound(run.data, run.clips, manifest, plan=plan, opts=opts, **kw)
    if kind == "pairs":
        return ing.ingest_pairs(run.data, manifest, opts)
    if kind == "table":
        cols = {role: io.get(f"{role}_col") for role in TABLE_COLUMNS}
        return ing.ingest_table(run.data, manifest, opts=opts, flags=PAIR_TABLE_FLAGS, **cols)
    raise UserError(f"unknown --kind {kind!r}; expected videos, vggsound, pairs or table")


def labels_from_folders(run: Any, kind: str) -> tuple[bool, str | None]:
    """Whether pairs are labelled by their folder, and the line that says so (None: nothing to say)."""
    if run.labels_from_folders is False:
        return False, None
    if run.labels_from_folders:
        return True, "labels: the name of each file's folder (--labels-from-folders)"
    from .ingest.videos import class_folders

    names = class_folders(run.data) if kind == "videos" else None
    if names is None:
        return False, None
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return True, (
        f"labels: every video is in a class folder, so the folder names are the labels ({len(names)} classes: "
        f"{shown}); --no-labels-from-folders leaves them out"
    )


#: a pair run's own state (stage fingerprints), in its output folder
STATE_FILE = "pair.json"


def default_out(data: Path, a: str, b: str) -> Path:
    """``ee pair``'s output folder when ``--out`` is not given: ``DATA.A-B`` beside the data, DATA being a
    folder's name or a file's name without its extension (``pairs.csv`` -> ``pairs.clip-vggish``). A run
    begun under the older name, with the extension (``pairs.csv.clip-vggish``), goes on there."""
    new = data.parent / f"{data.name if data.is_dir() else data.stem}.{a}-{b}"
    old = data.parent / f"{data.name}.{a}-{b}"
    if old != new and not new.exists() and (old / STATE_FILE).is_file():
        return old
    return new


def run_folder(adapter: Path) -> Path:
    """Where the outputs drawn from an adapter go (``export/``, ``figures/``): the ``ee pair`` folder for
    an adapter it trained (``OUT/train/adapter.safetensors`` -> ``OUT``), else the adapter's own folder
    (``ee train --out``). So ``ee export`` and ``ee figures`` write where ``ee pair`` does."""
    folder = adapter.parent
    if folder.name == "train" and (folder.parent / STATE_FILE).is_file():
        return folder.parent
    return folder
