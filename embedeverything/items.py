"""Decoded items: the one contract between decoding and encoders.

- image: an RGB ``uint8`` numpy array ``[H, W, 3]``;
- audio: :class:`Audio`, ``float32`` samples ``[channels, n]`` plus the sample rate (encoders resample);
- text: a ``str``.

Decoders produce exactly these; encoders convert from here (resize, resample, tokenise). A float item
with NaN or infinite values is bad input, not a broken encoder: :func:`nonfinite_reason` says why, and the
framework records that row as failed before any encoder sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODALITIES: tuple[str, ...] = ("image", "audio", "text", "video")


@dataclass(frozen=True)
class Audio:
    """A stretch of audio as decoded, before any resampling or down-mixing."""

    samples: np.ndarray  # float32 [channels, n]
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray) or self.samples.ndim != 2:
            raise ValueError("Audio.samples must be a 2-d numpy array [channels, n]")
        if self.samples.dtype != np.float32:
            raise ValueError(f"Audio.samples must be float32, got {self.samples.dtype}")
        if int(self.sample_rate) <= 0:
            raise ValueError(f"Audio.sample_rate must be positive, got {self.sample_rate}")

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / float(self.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])


def nonfinite_reason(item: object) -> str | None:
    """Why ``item`` cannot be embedded because it holds NaN or infinite values, or None."""
    values = item.samples if isinstance(item, Audio) else item
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fc":
        return None  # integers (images) and text are always finite
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if not bad:
        return None
    what = "audio samples" if isinstance(item, Audio) else "values"
    return f"input has {bad} NaN or infinite {what} (of {values.size})"
