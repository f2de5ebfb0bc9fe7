"""What ``ee serve`` hands a browser, made inside decoder processes: JPEG thumbnails, WAV windows, and
an uploaded file decoded under caps.

A search page serves media named in a manifest (which anyone who wrote the data chose) and decodes files
a browser sends. Neither is ever passed through: a manifest-named ``.svg`` or ``.html`` would run script
in the page's origin, and a hostile upload may crash or hang a decoder. So every byte a browser gets is
re-encoded here (baseline JPEG, 16-bit PCM WAV), and these functions run only in the decoder processes
of :mod:`.decoder_pool`, under its time limit.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadItem
from .items import Audio
from .manifest import MediaRef

THUMB_SIDE = 320  # pixels: the longer side of a thumbnail
MAX_AUDIO_S = 30.0  # seconds: the longest audio decoded for a query or served as a window
MAX_TEXT_CHARS = 2000


def image_pixels_ok(path: Path) -> None:
    """Refuse an image above Pillow's pixel limit before its pixels are decoded.

    Pillow itself only refuses at twice its limit (a warning below that): a page anyone can reach must
    not decode a 178-megapixel image because a small file claims it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadItem(f"unreadable image ({type(e).__name__}: {e})") from None
    except Image.DecompressionBombError as e:
        raise BadItem(f"image too large ({e})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise BadItem(f"image too large ({w}x{h} pixels; the limit is {limit})")


def thumbnail(ref: dict[str, Any], root: str | None) -> bytes:
    """A JPEG of at most :data:`THUMB_SIDE` pixels a side: the image, or the video frame at its time."""
    from PIL import Image

    from .decode import decode, resolve

    r = MediaRef.model_validate(ref)
    if r.modality != "image":
        raise BadItem(f"a {r.kind} has no thumbnail")
    if r.kind == "image":
        image_pixels_ok(resolve(r, root))
    pixels = decode(r, root)
    im = Image.fromarray(np.asarray(pixels, np.uint8), "RGB")
    im.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def window(ref: dict[str, Any], root: str | None) -> bytes:
    """A WAV of the audio ``ref`` names (its window), at most :data:`MAX_AUDIO_S` seconds long."""
    from .decode import decode

    r = MediaRef.model_validate(ref)
    if r.modality != "audio":
        raise BadItem(f"a {r.kind} has no audio")
    start = r.start or 0.0
    end = start + MAX_AUDIO_S if r.end is None else min(r.end, start + MAX_AUDIO_S)
    return wav_bytes(decode(r.model_copy(update={"start": start, "end": end}), root))


def wav_bytes(audio: Audio) -> bytes:
    """16-bit PCM WAV of at most two channels (a browser plays it; nothing in it is the source's)."""
    samples = audio.samples[:2] if audio.samples.shape[0] <= 2 else audio.samples.mean(0, keepdims=True)
    pcm = np.clip(np.nan_to_num(samples), -1.0, 1.0)
    pcm = np.round(pcm * 32767).astype("<i2").T.copy()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(audio.sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def text(ref: dict[str, Any], root: str | None) -> str:
    """A text ref's words (inline, or its ``.txt`` file), cut to :data:`MAX_TEXT_CHARS`."""
    from .decode import decode

    r = MediaRef.model_validate(ref)
    words = decode(r, root)
    return str(words)[:MAX_TEXT_CHARS]


def upload(path: str, kind: str, image: dict[str, Any] | None) -> Any:
    """An uploaded file decoded as the query item: an image (pixel limit checked first), the first
    :data:`MAX_AUDIO_S` seconds of audio, or a video's middle frame (``video_frame``) or its audio."""
    from .decode import decode, media_duration
    from .images import ImageDecoding

    p = Path(path)
    decoding = None if image is None else ImageDecoding(**image)
    if kind == "image":
        image_pixels_ok(p)
        return decode(MediaRef(kind="image", path=path), None, decoding)
    if kind in ("audio", "video_audio"):
        return decode(MediaRef(kind=kind, path=path, start=0.0, end=MAX_AUDIO_S), None)
    if kind == "video_frame":
        duration = media_duration(p)[0] or 0.0
        return decode(MediaRef(kind="video_frame", path=path, t=duration / 2), None, decoding)
    raise BadItem(f"cannot read an upload as {kind!r}")
