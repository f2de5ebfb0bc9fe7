"""Decoding a :class:`MediaRef` into a decoded item (see ``items.py``).

These functions run inside decoder processes (``decoder_pool.py``): a hostile file may crash or hang
the decoder, and that must cost the file, not the run. Every container opened here is closed.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadItem
from .images import ImageDecoding, image_to_rgb_array
from .items import Audio
from .manifest import MediaRef


def resolve(ref: MediaRef, root: str | Path | None) -> Path:
    assert ref.path is not None
    p = Path(ref.path)
    return p if p.is_absolute() or root is None else Path(root) / p


def decode(ref: MediaRef, root: str | Path | None = None, image: ImageDecoding | None = None) -> Any:
    """The decoded item for ``ref``; raises :class:`BadItem` with a reason a user can act on.

    ``image``: how image files are decoded (the encoder's ``decoding``; None: the defaults)."""
    if ref.kind == "text" and ref.text is not None:
        return ref.text
    path = resolve(ref, root)
    if not path.exists():
        raise BadItem(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise BadItem(f"empty file (0 bytes): {path}")
    if ref.kind == "text":
        try:
            return path.read_text(encoding="utf-8-sig").strip()
        except UnicodeDecodeError:
            raise BadItem(f"not UTF-8 text: {path}") from None
    if ref.kind == "image":
        return decode_image_file(path, image)
    if ref.kind == "audio":
        return decode_audio_file(path, ref.start, ref.end)
    if ref.kind == "video_frame":
        assert ref.t is not None
        return decode_video_frame(path, ref.t)
    if ref.kind == "video_audio":
        return decode_video_audio(path, ref.start, ref.end)
    raise BadItem(f"unknown media kind {ref.kind!r}")


def decode_image_file(path: Path, image: ImageDecoding | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return image_to_rgb_array(im, image)
    except Image.DecompressionBombError as e:  # a tiny file that claims billions of pixels
        raise BadItem(f"image too large ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadItem(f"unreadable image ({type(e).__name__}: {e})") from None


def decode_audio_file(path: Path, start: float | None = None, end: float | None = None) -> Audio:
    """soundfile first (wav, flac, ogg, mp3); other containers through PyAV."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        return decode_video_audio(path, start, end)
    sr = int(info.samplerate)
    first = int(round((start or 0.0) * sr))
    last = info.frames if end is None else min(info.frames, int(round(end * sr)))
    try:
        data, sr = sf.read(str(path), start=first, stop=max(first, last), dtype="float32", always_2d=True)
    except Exception as e:
        raise BadItem(f"unreadable audio ({type(e).__name__}: {e})") from None
    if data.shape[0] == 0:
        raise BadItem("no audio samples in the requested window")
    return Audio(np.ascontiguousarray(data.T), int(sr))


def _open_av(path: Path) -> Any:
    import av

    try:
        return av.open(str(path), timeout=30)
    except Exception as e:  # av.error.* are many; all mean "cannot read this file"
        raise BadItem(f"not a readable media file ({type(e).__name__}: {e})") from None


def decode_video_frame(path: Path, t: float) -> np.ndarray:
    """The frame on screen at ``t`` seconds: the last frame whose time is <= t."""
    container = _open_av(path)
    try:
        if not container.streams.video:
            raise BadItem("no video stream")
        stream = container.streams.video[0]
        # Frame threads decode several frames at once and still hand them out in order.
        stream.thread_type = "FRAME"
        if stream.time_base is not None and t > 0:
            container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        best = None
        for frame in container.decode(stream):
            ft = frame.time
            if ft is None:
                continue
            if best is None or ft <= t + 1e-6:
                best = frame  # converted once, below, not every frame decoded since the keyframe
            if ft >= t - 1e-6:
                break
        if best is None:
            raise BadItem(f"no video frame could be decoded at {t:.2f}s")
        return np.ascontiguousarray(best.to_ndarray(format="rgb24"), dtype=np.uint8)
    except BadItem:
        raise
    except Exception as e:
        raise BadItem(f"video decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


SEEK_MARGIN = 0.25  # seconds: >= 3 AAC frames even at 16 kHz


def decode_video_audio(path: Path, start: float | None, end: float | None) -> Audio:
    """Audio samples of [start, end) seconds, at the stream's own rate and channel count."""
    import av

    container = _open_av(path)
    try:
        if not container.streams.audio:
            raise BadItem("no audio track")
        stream = container.streams.audio[0]
        lo = float(start or 0.0)
        hi = float("inf") if end is None else float(end)
        # Seek a little early: the first frame decoded after a seek lacks its predecessor's overlap.
        if lo > SEEK_MARGIN and stream.time_base is not None:
            container.seek(int((lo - SEEK_MARGIN) / stream.time_base), stream=stream, backward=True)
        resampler = None
        pieces: list[np.ndarray] = []
        rate = None
        first_time = None
        for frame in container.decode(stream):
            ft = frame.time
            if ft is not None and frame.sample_rate and ft + frame.samples / frame.sample_rate <= lo:
                continue  # wholly before the window (we seeked early): skip the conversion
            if rate is None:
                rate = frame.sample_rate
            if frame.format.name == "fltp":  # AAC's own format: already float32 [channels, n]
                outs = [frame]
            else:
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
                outs = resampler.resample(frame)
            for out in outs:
                if first_time is None:
                    first_time = float(out.time if out.time is not None else ft or 0.0)
                pieces.append(out.to_ndarray())
            if ft is not None and ft > hi:
                break
        if not pieces or rate is None or first_time is None:
            raise BadItem("no audio samples could be decoded")
        samples = np.concatenate(pieces, axis=1).astype(np.float32, copy=False)
        i0 = max(0, int(round((lo - first_time) * rate)))
        i1 = samples.shape[1] if hi == float("inf") else max(i0, int(round((hi - first_time) * rate)))
        window = samples[:, i0:i1]
        if window.shape[1] == 0:
            raise BadItem(f"no audio samples in [{lo:.2f}s, {hi:.2f}s)")
        return Audio(np.ascontiguousarray(window), int(rate))
    except BadItem:
        raise
    except Exception as e:
        raise BadItem(f"audio decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".aif", ".aiff"}
)
TEXT_EXTENSIONS = frozenset({".txt"})


def probe(path: str | Path, kind: str) -> dict[str, Any]:
    """What ingestion needs to know about one file, found by reading it; raises :class:`BadItem`.

    Runs in decoder processes (``DecoderPool.probe_all``): probing a hostile file crashes and hangs
    decoders as readily as decoding it does. ``kind`` is video, image, audio or text.
    """
    p = Path(path)
    if not p.exists():
        raise BadItem(f"file not found: {p}")
    if not p.is_file():
        raise BadItem(f"not a regular file: {p}")
    if p.stat().st_size == 0:
        raise BadItem(f"empty file (0 bytes): {p}")
    if kind == "video":
        return probe_video(p)
    if kind == "image":
        im = decode_image_file(p)
        return {"width": int(im.shape[1]), "height": int(im.shape[0])}
    if kind == "audio":
        return probe_audio(p)
    if kind == "text":
        try:
            return {"chars": len(p.read_text(encoding="utf-8-sig"))}
        except UnicodeDecodeError:
            raise BadItem(f"not UTF-8 text: {p}") from None
    raise BadItem(f"unknown media kind {kind!r}")


def probe_audio(path: Path) -> dict[str, Any]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        info = None
    if info is not None and info.frames > 0:
        return {
            "audio_start": 0.0,
            "audio_end": info.frames / float(info.samplerate),
            "sample_rate": int(info.samplerate),
            "channels": int(info.channels),
        }
    found = probe_video(path, need_video=False)
    if found["audio_end"] is None:
        raise BadItem("no audio track")
    return found


def probe_video(path: Path, need_video: bool = True) -> dict[str, Any]:
    """Stream extents from the packets themselves, plus one decoded frame per stream.

    Headers can lie (a truncated file keeps the duration it was meant to have), so the extents come from
    demuxing every packet (cheap: nothing is decoded), and the first frame of each stream is decoded to
    prove the codec works. Keys: video_start/video_end/audio_start/audio_end (seconds, None without
    that stream), width, height, sample_rate, channels.
    """
    container = _open_av(path)
    try:
        vs = container.streams.video[0] if container.streams.video else None
        aus = container.streams.audio[0] if container.streams.audio else None
        if vs is None and need_video:
            raise BadItem("no video stream")
        if vs is None and aus is None:
            raise BadItem("no video or audio stream")
        lo, hi, decoded = _demux_extents(container, [s for s in (vs, aus) if s is not None])
        out: dict[str, Any] = {"video_start": None, "video_end": None, "audio_start": None, "audio_end": None}
        for name, s in (("video", vs), ("audio", aus)):
            if s is None:
                continue
            if s.index not in hi:
                raise BadItem(f"{name} stream has no packets (truncated?)")
            if s.index not in decoded:
                raise BadItem(f"{name} stream cannot be decoded ({s.codec_context.name})")
            declared = _declared_duration(s)
            actual = hi[s.index] - max(0.0, lo[s.index])
            if declared is not None and declared - actual > max(0.5, 0.05 * declared):
                raise BadItem(
                    f"truncated: the {name} stream declares {declared:.2f}s but its data ends at {actual:.2f}s"
                )
            out[f"{name}_start"] = max(0.0, lo[s.index])
            out[f"{name}_end"] = hi[s.index]
        if vs is not None:
            out["width"], out["height"] = int(vs.codec_context.width), int(vs.codec_context.height)
        if aus is not None:
            out["sample_rate"] = int(aus.codec_context.sample_rate)
            out["channels"] = int(aus.codec_context.channels)
        return out
    finally:
        container.close()


def _demux_extents(container: Any, streams: list[Any]) -> tuple[dict[int, float], dict[int, float], set[int]]:
    """Per stream index: the first packet's start, the last packet's end, and whether a frame decoded."""
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    decoded: set[int] = set()
    try:
        for pkt in container.demux(streams):
            if pkt.pts is None or pkt.time_base is None:
                continue
            i = pkt.stream.index
            t0 = float(pkt.pts * pkt.time_base)
            t1 = float((pkt.pts + (pkt.duration or 0)) * pkt.time_base)
            lo[i] = min(lo.get(i, t0), t0)
            hi[i] = max(hi.get(i, t1), t1)
            if i not in decoded and pkt.size:
                if pkt.decode():
                    decoded.add(i)
        for s in streams:  # decoders that buffer (threads, reordering) give their first frame on flush
            if s.index not in decoded and s.index in hi and s.codec_context.decode(None):
                decoded.add(s.index)
    except BadItem:
        raise
    except Exception as e:
        raise BadItem(f"truncated or corrupt media ({type(e).__name__}: {e})") from None
    return lo, hi, decoded


def _declared_duration(stream: Any) -> float | None:
    """What the stream's header says its duration is, in seconds (None when it says nothing)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * Fraction(stream.time_base))
    return None


def media_duration(path: Path) -> tuple[float | None, float | None, bool]:
    """(video duration, audio duration, has audio) of a media file, in seconds, from its streams."""
    container = _open_av(path)
    try:

        def dur(stream: Any) -> float | None:
            declared = _declared_duration(stream)
            if declared is None and container.duration is not None:
                return container.duration / 1_000_000
            return declared

        v = dur(container.streams.video[0]) if container.streams.video else None
        a = dur(container.streams.audio[0]) if container.streams.audio else None
        return v, a, bool(container.streams.audio)
    finally:
        container.close()
