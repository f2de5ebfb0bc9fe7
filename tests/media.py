"""Real test media, generated on the spot: mp4 (h264 + aac), wav/flac, png, and broken files.

The videos are built so that a test can check *when* a frame and an audio window were taken: the
clip is cut into segments, and segment ``k`` shows a solid colour ``SEGMENT_COLOURS[k]`` while its audio
is a pure tone of ``segment_tone(k)`` Hz. Decode a frame, read its dominant colour; decode a window,
read its FFT peak; both name the segment.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# Far apart in RGB so that h264's chroma subsampling and compression cannot confuse them.
SEGMENT_COLOURS: list[tuple[int, int, int]] = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
]


def segment_tone(k: int) -> float:
    """Tone of segment ``k``, Hz: 400, 800, 1200, ... (well apart after AAC)."""
    return 400.0 * (k + 1)


def write_video(
    path: Path,
    seconds: float = 4.0,
    *,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    sample_rate: int = 16000,
    segment: float = 1.0,
    audio: bool = True,
    video: bool = True,
    channels: int = 1,
    faststart: bool = False,
    audio_codec: str = "aac",
) -> Path:
    """An mp4 whose colour and tone change every ``segment`` seconds (see the module docstring)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    # faststart puts the index first: cut such a file short and it still opens, with packets missing.
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        vs = as_ = None
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"preset": "ultrafast", "g": str(fps)}  # a keyframe each second: seeking matters
        if audio:
            as_ = out.add_stream(audio_codec, rate=sample_rate)
            as_.layout = "mono" if channels == 1 else "stereo"
        if vs is not None:
            for i in range(int(round(seconds * fps))):
                k = int((i / fps) // segment) % len(SEGMENT_COLOURS)
                img = np.empty((h, w, 3), np.uint8)
                img[:] = SEGMENT_COLOURS[k]
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                for pkt in vs.encode(frame):
                    out.mux(pkt)
            for pkt in vs.encode():
                out.mux(pkt)
        if as_ is not None:
            n = int(round(seconds * sample_rate))
            t = np.arange(n) / sample_rate
            k = (t // segment).astype(int) % len(SEGMENT_COLOURS)
            freq = 400.0 * (k + 1)
            phase = 2 * np.pi * np.cumsum(freq) / sample_rate  # continuous phase across segments
            wave = (0.5 * np.sin(phase)).astype(np.float32)
            block = 1024
            for i in range(0, n, block):
                chunk = np.tile(wave[i : i + block], (channels, 1))
                if audio_codec == "pcm_s16le":  # packed int16: [1, n * channels], interleaved
                    packed = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=as_.layout.name)
                else:
                    frame = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(chunk), format="fltp", layout=as_.layout.name
                    )
                frame.sample_rate = sample_rate
                frame.pts = i
                frame.time_base = Fraction(1, sample_rate)
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
    return path


def write_tone(path: Path, seconds: float = 1.0, freq: float = 440.0, sample_rate: int = 16000) -> Path:
    """A wav or flac (by extension) with one tone."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sample_rate)
    return path


def write_image(
    path: Path, colour: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (32, 24)
) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_png_bomb(path: Path, side: int = 20000) -> Path:
    """A few-byte PNG whose header claims ``side`` x ``side`` pixels (a decompression bomb's signature)."""
    import struct
    import zlib

    write_image(path, (0, 0, 0), (1, 1))
    data = bytearray(Path(path).read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_zero_bytes(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_as(path: Path, text: str = "this is not a video, only text\n" * 20) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``source``: an mp4 cut off mid-stream (its index is lost)."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def dominant_colour(image: np.ndarray) -> int:
    """Index into ``SEGMENT_COLOURS`` of the colour nearest the image's mean."""
    mean = image.reshape(-1, 3).astype(np.float64).mean(axis=0)
    d = [np.linalg.norm(mean - np.array(c)) for c in SEGMENT_COLOURS]
    return int(np.argmin(d))


def peak_frequency(samples: np.ndarray, sample_rate: int) -> float:
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    spec = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.argmax(spec) * sample_rate / mono.size)


def tone_segment(samples: np.ndarray, sample_rate: int) -> int:
    """Index of the segment whose tone is nearest the audio's FFT peak."""
    f = peak_frequency(samples, sample_rate)
    return int(round(f / 400.0)) - 1
