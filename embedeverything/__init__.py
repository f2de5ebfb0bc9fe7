"""embedeverything: co-embed any two modalities with frozen encoders and small contrastive heads.

Public API (imported lazily, so that ``ee --help`` and plugin discovery stay fast and torch-free). A
plugin imports nothing else from embedeverything (tests/test_plugins.py checks the bundled ones and the
examples), so these names are what stays stable for plugins:

- the encoder contract: :class:`Encoder`, :class:`Weights`, :class:`EncoderIdentity`, :class:`Audio`,
  :class:`BadItem`, :class:`UserError`, :class:`PluginError`, :data:`hookimpl`, :func:`register_plugin`;
- weights: :func:`sha256_file`; pretrained files a plugin declares (:class:`WeightFile`) and checks
  (:func:`check_local_file`); where the usual caches are (:func:`xdg_cache`, :func:`torch_hub_dir`,
  :func:`hf_cached_file`); whether a download host answers, quickly (:func:`reachable`);
- hints that name the flag giving options to an encoder in the command at work: :func:`option_flag`;
- where torch runs: :func:`choose_device`, :func:`pin_threads`;
- downstream users: :func:`load_adapter`, :func:`pipeline`, :class:`Pipeline`, :func:`get_encoder`,
  :class:`Store`; the whole method as ``ee pair`` runs it: :func:`pair` -> :class:`PairResult`.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Encoder": ".encoder",
    "Weights": ".encoder",
    "EncoderIdentity": ".encoder",
    "option_flag": ".encoder",
    "sha256_file": ".files",
    "WeightFile": ".weights",
    "check_local_file": ".weights",
    "hf_cached_file": ".weights",
    "reachable": ".weights",
    "torch_hub_dir": ".weights",
    "xdg_cache": ".weights",
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
    "pair": ".pair_api",
    "PairResult": ".pair_api",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
