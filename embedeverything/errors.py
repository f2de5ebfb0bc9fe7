"""Exceptions a user can cause, and the per-row failures that are recorded instead of raised.

The CLI turns every ``EEError`` into one line on stderr and its ``exit_code``; nothing else a user can
cause should escape as a traceback.
"""

from __future__ import annotations

from typing import Any


class EEError(Exception):
    """Base of the errors the CLI reports in one line."""

    exit_code: int = 2


class UserError(EEError):
    """A user's mistake (unknown encoder, missing path, bad option): nothing was done."""


class PluginError(EEError):
    """A plugin broke its contract (wrong output shape, NaNs, a hook that raised)."""

    def __init__(self, plugin: str, message: str):
        self.plugin = plugin
        super().__init__(f"plugin {plugin}: {message}")


class StoreError(EEError):
    """The store is missing, of another format, or does not match what the command expects."""


class BadItem(Exception):
    """One input cannot be embedded (unreadable media, audio too short): recorded with its reason."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def field_errors(error: Any, whole: str = "", first_only: bool = False) -> str:
    """A pydantic ``ValidationError`` as one line, ``field.sub: message; ...``: the CLI prints one line.

    ``whole`` names an error that belongs to no field (a model-level check); ``first_only`` keeps the first
    problem, for input read line by line, where the rest are usually the same mistake again.
    """
    parts = []
    for err in error.errors()[:1] if first_only else error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or whole
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)
