"""Exceptions a user can cause, and the per-row failures that are recorded instead of raised.

The CLI turns every ``EEError`` into one line on stderr and its ``exit_code``; nothing else a user can
cause should escape as a traceback.
"""

from __future__ import annotations


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
