"""Finding plugins: entry points of group ``embedeverything``, each loaded and called on its own.

A plugin that fails to import, or whose hook raises, is recorded as broken with the reason and the
others still load: one bad install must not take ``ee`` down. The bundled CLIP and VGGish plugins come in
through the same entry points as a third party's. ``EE_LOAD_PLUGINS=a,b`` restricts loading to those
entry points (empty: none), as ``LLM_LOAD_PLUGINS`` does for llm.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .encoder import Encoder, validate_encoder_class
from .errors import UserError

ENTRY_POINT_GROUP = "embedeverything"


@dataclass(frozen=True)
class EncoderEntry:
    cls: type[Encoder]
    plugin: str
    version: str


@dataclass(frozen=True)
class Broken:
    plugin: str
    reason: str


@dataclass
class Registry:
    encoders: dict[str, EncoderEntry] = field(default_factory=dict)
    losses: dict[str, tuple[Callable[..., Any], str]] = field(default_factory=dict)
    broken: list[Broken] = field(default_factory=list)


_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None
_versions: dict[str, str] = {}
_import_failures: list[Broken] = []


def plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        _load_entry_points(pm)
        _pm = pm
    return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get("EE_LOAD_PLUGINS")
    only = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (only is not None and ep.name not in only) or ep.name in seen:
            continue
        seen.add(ep.name)
        version = ep.dist.version if ep.dist is not None else "unknown"
        try:
            module = ep.load()
        except Exception as e:  # a broken third-party install must not break ee
            _import_failures.append(
                Broken(ep.name, f"failed to import {ep.value!r}: {type(e).__name__}: {e}")
            )
            continue
        try:
            pm.register(module, name=ep.name)
            pm.check_pending()  # a misspelled hook fails loudly instead of silently never running
        except Exception as e:
            _import_failures.append(Broken(ep.name, f"{type(e).__name__}: {e}"))
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            continue
        _versions[ep.name] = version


def register_plugin(plugin: Any, name: str, version: str = "unknown") -> None:
    """Register a plugin object in this process (tests, notebooks): same effect as an entry point."""
    pm = plugin_manager()
    pm.register(plugin, name=name)
    _versions[name] = version
    reset_registry()


def unregister_plugin(name: str) -> None:
    pm = plugin_manager()
    if pm.has_plugin(name):
        pm.unregister(name=name)
    reset_registry()


def reset_registry() -> None:
    global _registry
    _registry = None


def registry() -> Registry:
    """Every encoder and loss the installed plugins register, and the plugins that broke."""
    global _registry
    if _registry is not None:
        return _registry
    pm = plugin_manager()
    reg = Registry(broken=list(_import_failures))
    for impl in pm.hook.register_encoders.get_hookimpls():
        plugin = impl.plugin_name
        version = _versions.get(plugin, "unknown")
        pending: list[type[Encoder]] = []
        try:
            impl.function(register=pending.append)
        except Exception as e:
            reg.broken.append(Broken(plugin, f"register_encoders raised {type(e).__name__}: {e}"))
            continue
        for cls in pending:
            why = validate_encoder_class(cls)
            if why is None and cls.name in reg.encoders:
                why = f"encoder name {cls.name!r} is already registered by plugin {reg.encoders[cls.name].plugin!r}"
            if why is not None:
                reg.broken.append(Broken(plugin, why))
                continue
            reg.encoders[cls.name] = EncoderEntry(cls, plugin, version)
    for impl in pm.hook.register_losses.get_hookimpls():
        plugin = impl.plugin_name
        found: list[tuple[str, Callable[..., Any]]] = []
        try:
            impl.function(register=lambda name, factory, _found=found: _found.append((name, factory)))
        except Exception as e:
            reg.broken.append(Broken(plugin, f"register_losses raised {type(e).__name__}: {e}"))
            continue
        for name, factory in found:
            if name in reg.losses:
                reg.broken.append(
                    Broken(plugin, f"loss {name!r} is already registered by {reg.losses[name][1]!r}")
                )
                continue
            reg.losses[name] = (factory, plugin)
    _registry = reg
    return reg


def get_encoder(name: str, **options: Any) -> Encoder:
    """An encoder by name, with its options validated; weights are not loaded yet."""
    reg = registry()
    entry = reg.encoders.get(name)
    if entry is None:
        broken = [b for b in reg.broken if b.plugin == name]
        hint = f" (plugin {name!r} is broken: {broken[0].reason})" if broken else ""
        known = ", ".join(sorted(reg.encoders)) or "none installed"
        raise UserError(f"unknown encoder {name!r}{hint}; installed encoders: {known}")
    enc = entry.cls(**options)
    enc.plugin_name = entry.plugin
    enc.plugin_version = entry.version
    return enc
