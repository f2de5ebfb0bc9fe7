"""Training heads on stored embeddings: split, losses, data sources, the trainer (heads: ``..heads``).

``from embedeverything.train import train, make_config`` is the library entry point that ``ee train``
(and ``ee pair``) call. Imported lazily: torch loads only when a name here is first used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "train": ".trainer",
    "TrainResult": ".trainer",
    "EpochReport": ".trainer",
    "TrainingInterrupted": ".interrupt",
    "recall_at_1": "..retrieval",
    "TrainConfig": ".config",
    "make_config": ".config",
    "PRESETS": ".config",
    "get_loss": ".losses",
    "loss_names": ".losses",
    "Split": ".split",
    "load_split": ".split",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
