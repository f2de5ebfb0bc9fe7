"""A folder of paired files sharing a stem: ``dog.jpg`` + ``dog.wav``, ``x.png`` + ``x.txt``, ...

The kinds come from the extensions (image, audio, text). Side a is the first of image, audio, text
present and side b the other, so image+audio puts the image on side a as in the paper. All pairs of a
manifest have the same two kinds: the most common combination in the folder wins, and a stem with
another combination, a single file, or two files of one kind is recorded as a failure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from ..decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS
from ..errors import BadItem, UserError, shown
from ..manifest import MediaRef, Pair
from .common import (
    Failure,
    IngestOptions,
    IngestResult,
    check_folder,
    find_files,
    finish,
    probe_files,
    ref_path,
)

KIND_ORDER = ("image", "audio", "text")


def kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in TEXT_EXTENSIONS:
        return "text"
    return None


def ingest_pairs(
    folder: str | Path,
    out: str | Path | None = None,
    opts: IngestOptions | None = None,
) -> IngestResult:
    """Paired files under ``folder`` (recursive) -> a manifest; every file is probed in a decoder process."""
    folder = check_folder(Path(folder), "folder")
    opts = opts or IngestOptions()
    manifest = Path(out) if out is not None else folder / "manifest.jsonl"
    files = find_files(folder, IMAGE_EXTENSIONS | AUDIO_EXTENSIONS | TEXT_EXTENSIONS)
    if not files:
        raise UserError(f"no image, audio or text files under {folder}")
    stems: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        stems[p.relative_to(folder).with_suffix("").as_posix()].append(p)
    ka, kb = _pair_kinds(folder, stems)
    result = IngestResult(source=f"pairs:{folder}", a=ka, b=kb, manifest=manifest)
    result.inputs = len(stems)
    candidates = _candidates(result, stems, opts)
    if candidates is not None:
        _probe(result, candidates, opts)
    return finish(result)


def _pair_kinds(folder: Path, stems: dict[str, list[Path]]) -> tuple[str, str]:
    """The kinds of sides a and b: the most common combination among stems of two files."""
    combos = Counter(
        tuple(sorted({kind_of(p) for p in ps}, key=KIND_ORDER.index)) for ps in stems.values() if len(ps) == 2
    )
    combos = Counter({c: n for c, n in combos.items() if len(c) == 2})
    if not combos:
        raise UserError(
            f"no pairs under {folder}: a pair is two files sharing a stem with different kinds "
            "(image+audio, image+text or audio+text), e.g. dog.jpg and dog.wav"
        )
    (ka, kb), _ = combos.most_common(1)[0]
    return ka, kb


def _candidates(
    result: IngestResult, stems: dict[str, list[Path]], opts: IngestOptions
) -> list[tuple[str, Path, Path]] | None:
    """(stem, side a file, side b file) of every stem that makes a pair of this folder's kinds; the
    others are failures (None when ``--strict`` stops at one)."""
    ka, kb = result.a, result.b
    root = result.manifest.parent
    candidates: list[tuple[str, Path, Path]] = []
    for stem, ps in sorted(stems.items()):
        kinds = sorted(kind_of(p) or "" for p in ps)
        reason = None
        if len(ps) == 1:
            reason = f"no partner: only {ps[0].name}"
        elif len(set(kinds)) != len(kinds):
            reason = f"ambiguous: {', '.join(p.name for p in ps)} share a stem and a kind"
        elif set(kinds) != {ka, kb}:
            reason = f"{'+'.join(kinds)} files, but this folder's pairs are {ka}+{kb}"
        if reason is not None:
            result.failures.append(
                Failure(ref_path(ps[0].parent / stem.rsplit("/", 1)[-1], root), reason, stem)
            )
            if opts.strict:
                result.stopped_early = True
                return None
            continue
        pa = next(p for p in ps if kind_of(p) == ka)
        pb = next(p for p in ps if kind_of(p) == kb)
        candidates.append((stem, pa, pb))
    return candidates


def _probe(result: IngestResult, candidates: list[tuple[str, Path, Path]], opts: IngestOptions) -> None:
    """Probe both files of every candidate; the pairs whose files both decode go into the result."""
    ka, kb = result.a, result.b
    root = result.manifest.parent
    to_probe = [(p, kind_of(p) or "") for _, pa, pb in candidates for p in (pa, pb)]
    bad: dict[int, BadItem] = {}
    for i, got in probe_files(to_probe, opts):
        if isinstance(got, BadItem):
            bad[i] = got
            stem = candidates[i // 2][0]
            result.failures.append(Failure(ref_path(to_probe[i][0], root), got.reason, stem))
            if opts.strict:
                result.stopped_early = True
                return
    for k, (stem, pa, pb) in enumerate(candidates):
        if 2 * k in bad or 2 * k + 1 in bad:
            continue
        result.pairs.append(
            Pair(
                id=shown(stem),
                a=MediaRef(kind=ka, path=ref_path(pa, root)),  # type: ignore[arg-type]
                b=MediaRef(kind=kb, path=ref_path(pb, root)),  # type: ignore[arg-type]
                group=shown(stem),
            )
        )
