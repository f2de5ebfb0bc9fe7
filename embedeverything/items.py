"""Decoded items: the one contract between decoding and encoders.

- image: an RGB ``uint8`` numpy array ``[H, W, 3]``;
- audio: :class:`Audio`, ``float32`` samples ``[channels, n]`` plus the sample rate (encoders resample);
- text: a ``str``.

Decoders produce exactly these; encoders convert from here (resize, resample, tokenise).
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
