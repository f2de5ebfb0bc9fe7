"""The hooks a plugin may implement. Each takes a ``register`` callback, as llm's do.

Call hooks by keyword; a hook grows by gaining arguments, and implementations may take fewer,
which is how this API stays stable for plugins already published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "embedeverything"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_encoders(register: Callable[..., None]) -> None:
    """Register encoders: ``register(EncoderSubclass)`` once per encoder."""


@hookspec
def register_losses(register: Callable[..., Any]) -> None:
    """Register contrastive losses: ``register(name, factory)``; ``factory(**options)`` returns a loss."""
