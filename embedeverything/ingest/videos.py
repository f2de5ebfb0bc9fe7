"""Videos -> (frame, audio window) pairs, the paper's data (section 4.1).

Each video gives K frames (default one, at the middle; or one every S seconds), each paired with the
W-second audio window centred on it. A window that runs past either end of the audio is shifted inside
it; a clip shorter than W gives its whole audio. The window actually used is recorded in the pair, the
frame's time too, and the video's path is the pair's group so that a split never divides a video.
Nothing decoded is written: the manifest points into the videos by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..decode import VIDEO_EXTENSIONS
from ..errors import BadItem, UserError, shown
from ..manifest import MediaRef, Pair, Split
from .common import (
    Failure,
    IngestOptions,
    IngestResult,
    check_folder,
    drop_duplicates,
    find_files,
    finish,
    probe_files,
    ref_path,
)

DEFAULT_WINDOW = 5.0


@dataclass(frozen=True)
class FramePlan:
    """Which frames to take from each video, and how much audio around each."""

    frames: int | None = None  # K frames, evenly spaced (segment centres); default 1: the middle
    every: float | None = None  # or one every S seconds, at S/2, 3S/2, ...
    window: float = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.frames is not None and self.every is not None:
            raise UserError("give either --frames K or --every S, not both")
        if self.frames is not None and self.frames < 1:
            raise UserError(f"--frames must be at least 1, not {self.frames}")
        if self.every is not None and not self.every > 0:
            raise UserError(f"--every must be a positive number of seconds, not {self.every}")
        if not self.window > 0:
            raise UserError(f"--window must be a positive number of seconds, not {self.window}")


def frame_times(start: float, end: float, plan: FramePlan) -> list[float]:
    """Frame times in [start, end): centres of K equal parts, or of S-second steps; at least one."""
    length = max(0.0, end - start)
    if plan.every is not None:
        times: list[float] = []
        t = start + plan.every / 2
        while t < end:
            times.append(t)
            t += plan.every
        return times or [start + length / 2]
    k = plan.frames or 1
    return [start + (i + 0.5) * length / k for i in range(k)]


def audio_window(t: float, window: float, start: float, end: float) -> tuple[float, float]:
    """The ``window``-second span centred on ``t``, shifted inside [start, end]; all of it if shorter."""
    if end - start <= window:
        return start, end
    lo = min(max(t - window / 2, start), end - window)
    return lo, lo + window


def pairs_for_video(
    rel: str,
    info: dict[str, Any],
    plan: FramePlan,
    *,
    name: str | None = None,
    label: str | None = None,
    split: Split | None = None,
) -> list[Pair]:
    """The pairs of one probed video (``decode.probe_video``'s dict); BadItem if it has no pairs to give.

    ``rel`` is the path stored in the refs (relative to the manifest), ``name`` the video's name in ids and
    groups (relative to the ingested folder, so that ids do not change with ``--out``; default ``rel``).
    A file name's bytes that are not UTF-8 show as ``\\xNN`` in the id and group; ``rel`` keeps them.
    """
    name = shown(name or rel)
    if info.get("video_end") is None:
        raise BadItem("no video stream")
    if info.get("audio_end") is None:
        raise BadItem("no audio track")
    v0, v1 = float(info["video_start"]), float(info["video_end"])
    a0, a1 = float(info["audio_start"]), float(info["audio_end"])
    pairs = []
    for t in frame_times(v0, v1, plan):
        t = round(t, 3)
        lo, hi = audio_window(t, plan.window, a0, a1)
        lo, hi = round(lo, 3), round(hi, 3)
        if hi <= lo:
            raise BadItem(f"audio track is empty ({a1 - a0:.3f}s)")
        pairs.append(
            Pair(
                id=f"{name}@{t:.3f}",
                a=MediaRef(kind="video_frame", path=rel, t=t),
                b=MediaRef(kind="video_audio", path=rel, start=lo, end=hi),
                label=label,
                group=name,
                split=split,
            )
        )
    return pairs


def ingest_video_files(
    result: IngestResult,
    folder: Path,
    videos: list[tuple[Path, dict[str, Any]]],
    plan: FramePlan,
    opts: IngestOptions,
) -> IngestResult:
    """Probe ``(path, extra)`` videos (extra: label, split) under ``folder``, add their pairs; then write."""
    root = result.manifest.parent
    result.inputs += len(videos)
    origin: dict[str, str] = {}
    for i, got in probe_files([(p, "video") for p, _ in videos], opts):
        path, extra = videos[i]
        rel = ref_path(path, root)
        name = ref_path(path, folder)
        try:
            if isinstance(got, BadItem):
                raise got
            new = pairs_for_video(rel, got, plan, name=name, **extra)
        except BadItem as e:
            result.failures.append(Failure(rel, e.reason))
            if opts.strict:
                result.stopped_early = True
                break
            continue
        for p in new:
            origin.setdefault(p.id, rel)
        result.pairs.extend(new)
    result.pairs, dups = drop_duplicates(result.pairs, origin)
    result.failures.extend(dups)
    if dups and opts.strict:
        result.stopped_early = True
    return finish(result)


def ingest_videos(
    folder: str | Path,
    out: str | Path | None = None,
    plan: FramePlan | None = None,
    opts: IngestOptions | None = None,
) -> IngestResult:
    """A folder of videos (recursive) -> a manifest of (frame, audio window) pairs; see the module docstring."""
    folder = check_folder(Path(folder), "video folder")
    plan = plan or FramePlan()
    opts = opts or IngestOptions()
    manifest = Path(out) if out is not None else folder / "manifest.jsonl"
    files = find_files(folder, VIDEO_EXTENSIONS)
    if not files:
        raise UserError(f"no video files under {folder} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    result = IngestResult(source=f"videos:{folder}", a="image", b="audio", manifest=manifest)
    return ingest_video_files(result, folder, [(p, {}) for p in files], plan, opts)


def class_folders(data: Path) -> list[str] | None:
    """The class folders when every video of ``data`` sits in one, one level down, and there are at least
    two (``videos/dog/1.mp4``); else None: then folder names are no classes a user would expect."""
    if not data.is_dir():
        return None
    videos = [
        p.relative_to(data) for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
    ]
    if not videos or any(len(v.parts) != 2 for v in videos):
        return None
    names = sorted({v.parts[0] for v in videos})
    return names if len(names) >= 2 else None


def labelled_by_folder(pairs: list[Pair]) -> list[Pair]:
    """Every pair labelled with the name of the folder its first file sits in (``videos/dog/1.mp4`` -> ``dog``)."""
    out = []
    for p in pairs:
        ref = p.a if p.a.path is not None else p.b
        label = Path(ref.path).parent.name if ref.path is not None else None
        out.append(p.model_copy(update={"label": label or p.label}))
    return out
