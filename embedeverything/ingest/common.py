"""What every ingestion source shares: probing files in decoder processes, failures, writing the result.

A source (videos, VGG-Sound, paired files, a table) turns its input into candidate pairs and a list of
files to probe; this module probes them in the :class:`DecoderPool` (hostile files crash and hang
decoders during probing too), records every failure with its reason, drops duplicate ids, and writes the
manifest plus ``<manifest>.failures.jsonl`` beside it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decoder_pool import DEFAULT_TIMEOUT, DecoderPool, default_decode_workers
from ..errors import BadItem, UserError, shown
from ..files import atomic_open
from ..manifest import Manifest, ManifestHeader, Pair, json_line, write_manifest

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
        return json_line(d)


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

    def failure_lines(self, examples: int = 5) -> list[str]:
        """What failed, for the terminal: the count, the counts by reason, a few examples, and where the
        whole list is (``ee ingest`` and ``ee pair`` print the same)."""
        if not self.failures:
            return []
        lines = [f"{len(self.failures)} of {self.inputs} inputs failed:"]
        lines += [f"  {n:6d}  {reason}" for reason, n in self.reason_counts()]
        lines += [f"  e.g. {shown(f.path)}: {f.reason}" for f in self.failures[:examples]]
        lines.append(f"all failures: {shown(str(self.failures_path or failures_path_for(self.manifest)))}")
        return lines


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
    A folder named like a media file (``x.mp4/``) is listed too, so that probing records it as a failure
    rather than leave it out without a word; what it holds is walked as any folder is.
    """
    exts = {e.lower() for e in extensions}
    skipped = {os.path.abspath(p) for p in skip}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".zarr"))
        for name in filenames + dirnames:
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


def not_a_file(path: Path) -> BadItem | None:
    """Why ``path`` is no file to probe, told apart where the decoder would only say "file not found";
    None when it may be one."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return BadItem(f"symlink loop: {path}")
        if os.path.islink(path):
            return BadItem(f"broken symlink: {path} -> {os.readlink(path)}")
        return None
    if stat.S_ISDIR(st.st_mode):
        return BadItem(f"a folder, not a file: {path}")
    return None


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
    early = {i: bad for i, (p, _) in enumerate(files) if (bad := not_a_file(p)) is not None}
    workers = max(1, min(opts.workers or default_decode_workers(), len(files)))
    batch = workers if opts.strict else workers * 16
    with DecoderPool(workers, opts.timeout, None) as pool:
        for lo in range(0, len(files), batch):
            part = [i for i in range(lo, min(lo + batch, len(files))) if i not in early]
            got = dict(
                zip(part, pool.probe_all([(str(files[i][0]), files[i][1]) for i in part]), strict=True)
            )
            if opts.on_progress is not None:
                opts.on_progress(min(batch, len(files) - lo))
            for i in range(lo, min(lo + batch, len(files))):
                yield i, early[i] if i in early else got[i]


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
