"""``ee ingest``: media and tables -> the pairs manifest that ``ee embed`` reads.

Sources: a folder of videos (:func:`ingest_videos`), VGG-Sound's CSV plus clips (:func:`ingest_vggsound`),
a folder of paired files (:func:`ingest_pairs`), a CSV/JSONL table (:func:`ingest_table`). Each probes
its files in decoder processes, records every bad input with its reason in ``manifest.failures.jsonl``,
and writes the manifest atomically.
"""

from __future__ import annotations

from .common import Failure, IngestOptions, IngestResult, failures_path_for
from .pairs import ingest_pairs
from .table import ingest_table
from .vggsound import DEFAULT_PATTERN, ingest_vggsound
from .videos import DEFAULT_WINDOW, FramePlan, audio_window, frame_times, ingest_videos

__all__ = [
    "DEFAULT_PATTERN",
    "DEFAULT_WINDOW",
    "Failure",
    "FramePlan",
    "IngestOptions",
    "IngestResult",
    "audio_window",
    "failures_path_for",
    "frame_times",
    "ingest_pairs",
    "ingest_table",
    "ingest_videos",
    "ingest_vggsound",
]
