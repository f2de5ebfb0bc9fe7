"""Contrastive losses: a registry of their own, filled through the ``register_losses`` hook.

The built-in losses come in through the same door as a third party's: :data:`BUILTIN` is an ordinary
plugin object registered in-process the first time a loss is looked up. A factory registered under a
name builds a loss from its options; what a loss is to the trainer is stated by :class:`.base.Loss`
(one loss per module here, each with its paper and shapes; the hand-written gradients in ``*_grad.py``
beside the reference they are checked against).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ...errors import PluginError, UserError
from ...hookspecs import hookimpl
from .base import TRAIN_SETTINGS, HeadPair, Loss, PluginLoss, declared_settings
from .clip import ClipLoss
from .clip_label import LabelAwareClipLoss
from .siglip import SigLipLoss
from .vse_hinge import VseHingeLoss

__all__ = [
    "BUILTIN",
    "BUILTIN_PLUGIN",
    "TRAIN_SETTINGS",
    "ClipLoss",
    "HeadPair",
    "LabelAwareClipLoss",
    "Loss",
    "SigLipLoss",
    "VseHingeLoss",
    "build_loss",
    "ensure_builtin_losses",
    "get_loss",
    "loss_names",
    "loss_plugin",
]

BUILTIN_PLUGIN = "embedeverything.losses"


class _BuiltinLosses:
    """The built-in losses, registered as an ordinary plugin (same hook as a third party)."""

    @staticmethod
    @hookimpl
    def register_losses(register: Callable[..., Any]) -> None:
        register("clip", ClipLoss)
        register("clip-label", LabelAwareClipLoss)
        register("siglip", SigLipLoss)
        register("vse-hinge", VseHingeLoss)


BUILTIN = _BuiltinLosses()


def ensure_builtin_losses() -> None:
    from ... import plugins

    if not plugins.plugin_manager().has_plugin(BUILTIN_PLUGIN):
        from ... import __version__

        plugins.register_plugin(BUILTIN, name=BUILTIN_PLUGIN, version=__version__)


def _losses() -> dict[str, tuple[Callable[..., Any], str]]:
    from ...plugins import registry

    ensure_builtin_losses()
    return registry().losses


def loss_names() -> list[str]:
    return sorted(_losses())


def loss_plugin(name: str) -> str:
    """The plugin that registered loss ``name`` ("" if none did)."""
    entry = _losses().get(name)
    return entry[1] if entry else ""


def get_loss(name: str, **options: Any) -> Loss:
    """A loss by its registered name, built with ``options``; UserError names what is wrong."""
    return build_loss(name, options)


def build_loss(name: str, options: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> Loss:
    """Loss ``name`` from the user's ``options`` and the trainer's ``settings`` it declares it takes.

    A setting reaches the factory only where its :class:`.base.Loss` class names it in
    ``train_settings`` and the user's options leave it unset (an option given wins).
    """
    entry = _losses().get(name)
    if entry is None:
        raise UserError(f"unknown loss {name!r}; registered losses: {', '.join(loss_names())}")
    factory, plugin = entry
    opts = dict(options)
    for key in declared_settings(factory):
        if settings is not None and key in settings:
            opts.setdefault(key, settings[key])
    try:
        loss = factory(**opts)
    except TypeError as e:
        raise UserError(f"bad option for loss {name!r} (plugin {plugin}): {e}") from None
    if not isinstance(loss, nn.Module):
        raise PluginError(
            plugin, f"loss {name!r} factory returned {type(loss).__name__}, not a torch.nn.Module"
        )
    return loss if isinstance(loss, Loss) else PluginLoss(loss)
