"""What every ingestion source shares: probing files in decoder processes, failures, writing the result.

A source (videos, VGG-Sound, paired files, a table) turns its input into candidate pairs and a list of
files to probe; this module probes them in the :class:`DecoderPool` (hostile files crash and hang
decoders during probing too), records every failure with its reason, drops duplicate ids, and writes the
manifest plus ``<manifest>.failures.jsonl`` beside it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decoder_pool import DEFAULT_TIMEOUT, DecoderPool, default_decode_workers
from ..errors import BadItem, UserError
from ..files import atomic_open
from ..manifest import Manifest, ManifestHeader, Pair, write_manifest

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Failure:
    """One input that gave no pair: the file (or CSV row) and why."""

    path: str
    reason: str
    id: str | None = None

    def to_json(self) -> str:
        d: dict[str, str] = {"path": self.path, "reason": self.reason}
        if self.id is not None:
            d["id"] = self.id
        return json.dumps(d, ensure_ascii=False)


@dataclass
class IngestOptions:
    """How to probe: decoder processes, the per-file time limit, and whether to stop at a failure."""

    workers: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    strict: bool = False
    on_start: Callable[[int], None] | None = None  # number of files to probe
    on_progress: ProgressFn | None = None  # files probed since the last call


@dataclass
class IngestResult:
    source: str
    a: str
    b: str
    manifest: Path
    pairs: list[Pair] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    inputs: int = 0  # files or rows looked at
    stopped_early: bool = False
    failures_path: Path | None = None
    written: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.stopped_early else 0

    def as_manifest(self) -> Manifest:
        """The manifest as :func:`finish` writes it, so that a caller holding the result need not read it back."""
        return Manifest(
            self.manifest, ManifestHeader(a=self.a, b=self.b, source=self.source), list(self.pairs)
        )

    def reason_counts(self) -> list[tuple[str, int]]:
        """Failures grouped by the kind of reason (the text before any detail in parentheses)."""
        return Counter(short_reason(f.reason) for f in self.failures).most_common()


def short_reason(reason: str) -> str:
    head = reason.split(" (", 1)[0].split(": ", 1)[0]
    return head.strip() or reason


def failures_path_for(manifest: Path) -> Path:
    name = manifest.name
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    return manifest.with_name(stem + ".failures.jsonl")


def ref_path(file: Path, root: Path) -> str:
    """``file`` as stored in a manifest at ``root``: relative (posix) when possible, so the folder can move.

    Symlinks are kept, not resolved: in git-annex, DVC or Hugging Face caches each file is a link to a
    blob named by its hash, and the names (which become ids) are the link's.
    """
    try:
        return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(root))).as_posix()
    except ValueError:  # another drive on Windows
        return Path(os.path.abspath(file)).as_posix()


def find_files(folder: Path, extensions: Iterable[str], skip: Iterable[Path] = ()) -> list[Path]:
    """Files under ``folder`` (recursive; hidden folders and stores skipped) with these extensions, sorted.

    A ``*.zarr`` store beside the media (``ee embed``'s default place) holds many small files: not walked.
    """
    exts = {e.lower() for e in extensions}
    skipped = {os.path.abspath(p) for p in skip}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".zarr"))
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and p.suffix.lower() in exts and os.path.abspath(p) not in skipped:
                out.append(p)
    return sorted(out)


def check_folder(folder: Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{what} not found: {folder}")
    if not folder.is_dir():
        raise UserError(f"{what} is not a folder: {folder}")
    return folder


def probe_files(
    files: Sequence[tuple[Path, str]], opts: IngestOptions
) -> Iterable[tuple[int, dict[str, Any] | BadItem]]:
    """(index, probe result or BadItem) in input order, probed in decoder processes, batch by batch.

    With ``opts.strict`` the caller stops iterating at the first failure, so at most one small batch
    is probed past it; otherwise batches are large, so that one slow file rarely idles the other workers.
    """
    if opts.on_start is not None:
        opts.on_start(len(files))
    if not files:
        return
    workers = max(1, min(opts.workers or default_decode_workers(), len(files)))
    batch = workers if opts.strict else workers * 16
    with DecoderPool(workers, opts.timeout, None) as pool:
        for lo in range(0, len(files), batch):
            part = files[lo : lo + batch]
            got = pool.probe_all([(str(p), kind) for p, kind in part])
            if opts.on_progress is not None:
                opts.on_progress(len(part))
            for k, r in enumerate(got):
                yield lo + k, r


def drop_duplicates(pairs: list[Pair], origin: dict[str, str]) -> tuple[list[Pair], list[Failure]]:
    """Keep the first pair of each id; the later ones are failures (a store row is keyed by its id)."""
    seen: dict[str, str] = {}
    kept: list[Pair] = []
    dups: list[Failure] = []
    for p in pairs:
        src = origin.get(p.id, "")
        if p.id in seen:
            dups.append(Failure(src, f"duplicate id {p.id!r} (first from {seen[p.id]})", p.id))
        else:
            seen[p.id] = src
            kept.append(p)
    return kept, dups


def finish(result: IngestResult) -> IngestResult:
    """Write the failures file and, unless a --strict run stopped, the manifest (atomically)."""
    fpath = failures_path_for(result.manifest)
    if result.failures:
        with atomic_open(fpath) as f:
            for fail in result.failures:
                f.write(fail.to_json() + "\n")
        result.failures_path = fpath
    elif fpath.exists():
        fpath.unlink()  # a stale list from an earlier run would mislead
    if not result.stopped_early:
        write_manifest(result.manifest, result.pairs, result.a, result.b, source=result.source)
        result.written = True
    return result
