"""embedeverything: co-embed any two modalities with frozen encoders and small contrastive heads.

Public API (imported lazily, so that ``ee --help`` and plugin discovery stay fast and torch-free):

- plugin authors: :class:`Encoder`, :class:`Weights`, :class:`Audio`, :class:`BadItem`, :data:`hookimpl`,
  :func:`sha256_file`;
- downstream users: :func:`load_adapter`, :func:`pipeline`, :func:`get_encoder`.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": ".encoder",
    "Weights": ".encoder",
    "EncoderIdentity": ".encoder",
    "sha256_file": ".files",
    "choose_device": ".runtime",
    "pin_threads": ".runtime",
    "Audio": ".items",
    "BadItem": ".errors",
    "UserError": ".errors",
    "PluginError": ".errors",
    "hookimpl": ".hookspecs",
    "get_encoder": ".plugins",
    "register_plugin": ".plugins",
    "Store": ".store",
    "load_adapter": ".adapter",
    "pipeline": ".inference",
    "Pipeline": ".inference",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
