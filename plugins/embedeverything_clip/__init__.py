"""CLIP through open_clip: ``clip`` (image tower) and ``clip-text`` (text tower).

Registered through the ``embedeverything`` entry point like any third-party plugin, using only the
public API (``import embedeverything as ee``). Both towers of one (architecture, weights) declare the same
``shared_space``, which tells the trainer that CLIP's side can stay as it is and that the text tower can
label the other side zero-shot.

Nothing here imports torch or open_clip at import time or in ``dim``/``weights_source``: ``ee encoders``
describes these encoders from a small table and open_clip's model config JSON files.

- ``options``: the options, and what they imply without open_clip (dim, known tags);
- ``sources``: where the weights come from (a local file, the caches, the network);
- ``towers``: the two encoders, built by open_clip.
"""

from __future__ import annotations

from typing import Any

import embedeverything as ee

from .options import ClipOptions, arch_dim, model_config, open_clip_config_dir
from .sources import ENV_CHECKPOINT
from .towers import ClipImage, ClipText

__version__ = ee.__version__

__all__ = [
    "ENV_CHECKPOINT",
    "ClipImage",
    "ClipOptions",
    "ClipText",
    "arch_dim",
    "model_config",
    "open_clip_config_dir",
    "register_encoders",
]


@ee.hookimpl
def register_encoders(register: Any) -> None:
    register(ClipImage)
    register(ClipText)
