"""Audio -> VGGish input: down-mix, resample to 16 kHz, log-mel examples of 0.96 s.

The log-mel part IS upstream's (``torchvggish.mel_features`` with ``vggish_params``), so the examples equal
``torchvggish.waveform_to_examples`` on 16 kHz input. Only the resampler differs by default: soxr, which is
much faster than upstream's resampy; tests/test_vggish.py holds the two within the tolerances stated
below. ``resampler="resampy"`` gives upstream's exact path.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400  # 25 ms STFT window at 16 kHz
HOP_SAMPLES = 160  # 10 ms hop
EXAMPLE_FRAMES = 96  # 0.96 s per example
#: the shortest 16 kHz signal that yields one example: 96 frames of 25 ms every 10 ms (0.975 s)
MIN_SAMPLES = WINDOW_SAMPLES + (EXAMPLE_FRAMES - 1) * HOP_SAMPLES
MIN_SECONDS = MIN_SAMPLES / SAMPLE_RATE

#: How far soxr's resampling may move the log-mel examples (natural log of mel magnitude + 0.01) from
#: upstream's resampy on the same 44.1 kHz input, as tests/test_vggish.py checks it:
#: - the mean absolute difference over all bins, for any signal;
SOXR_MEAN_TOLERANCE = 0.01
#: - the largest absolute difference in mel bands 0-61 (125 Hz to ~6.9 kHz), for broadband input.
SOXR_MAX_TOLERANCE_LOW_BANDS = 0.005
#: The top two bands (6.9-7.5 kHz) differ by up to ~0.5: soxr's pass band ends at ~0.91 of the 8 kHz
#: Nyquist (7.3 kHz), resampy's kaiser_best at ~0.95. Measured on 5 s of noise: bands 0-61 differ by at
#: most 0.0005, the mean over all bins by 0.006. ``resampler="resampy"`` gives upstream's exact path.
TOP_BANDS_DIFFER = (62, 63)

Resampler = Literal["soxr", "resampy"]


def samples_at_16k(n: int, sample_rate: int) -> int:
    """How many 16 kHz samples ``n`` samples at ``sample_rate`` become (the floor: a safe lower bound)."""
    return math.floor(n * SAMPLE_RATE / sample_rate)


def to_mono_16k(samples: np.ndarray, sample_rate: int, resampler: Resampler = "soxr") -> np.ndarray:
    """``[channels, n]`` at any rate -> mono ``[n16]`` at 16 kHz. Down-mix first, as upstream does."""
    mono = samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]
    if sample_rate == SAMPLE_RATE:
        return mono
    if resampler == "resampy":
        import resampy

        return resampy.resample(mono, sample_rate, SAMPLE_RATE)
    import soxr

    return soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ")


def log_mel_examples(wave16k: np.ndarray) -> np.ndarray:
    """16 kHz mono -> ``[k, 96, 64]`` float32 log-mel examples, exactly as ``waveform_to_examples``."""
    from torchvggish import mel_features, vggish_params

    if wave16k.shape[0] < MIN_SAMPLES:  # never for items check_item let through; kept for direct calls
        wave16k = np.pad(wave16k, (0, MIN_SAMPLES - wave16k.shape[0]))
    log_mel = mel_features.log_mel_spectrogram(
        wave16k,
        audio_sample_rate=vggish_params.SAMPLE_RATE,
        log_offset=vggish_params.LOG_OFFSET,
        window_length_secs=vggish_params.STFT_WINDOW_LENGTH_SECONDS,
        hop_length_secs=vggish_params.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=vggish_params.NUM_MEL_BINS,
        lower_edge_hertz=vggish_params.MEL_MIN_HZ,
        upper_edge_hertz=vggish_params.MEL_MAX_HZ,
    )
    frames_per_second = 1.0 / vggish_params.STFT_HOP_LENGTH_SECONDS
    window = int(round(vggish_params.EXAMPLE_WINDOW_SECONDS * frames_per_second))
    hop = int(round(vggish_params.EXAMPLE_HOP_SECONDS * frames_per_second))
    return mel_features.frame(log_mel, window_length=window, hop_length=hop).astype(np.float32)
