"""Evaluation: retrieval metrics with baselines and diagnostics, zero-shot with text, UMAP figures,
cross-modal query, the model card and export.

Library entry points (``ee pair`` calls them): :func:`evaluate` -> :class:`EvalReport`,
:func:`make_figures`, :func:`write_model_card`, :func:`export_embeddings`, :func:`zeroshot_files` and
its kin, :func:`query`. Each takes an adapter file, or the :class:`EvalData` that :func:`open_eval_data`
returns, so that a caller running several of them loads the adapter and opens the store once. Imported
lazily: umap, matplotlib and pyarrow load only when their function is used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "open_eval_data": ".data",
    "EvalData": ".data",
    "evaluate": ".report",
    "EvalReport": ".report",
    "MethodResult": ".report",
    "make_figures": ".figures",
    "write_model_card": ".card",
    "card_metadata": ".card_meta",
    "export_embeddings": ".export",
    "zeroshot_files": ".zeroshot",
    "zeroshot_manifest": ".zeroshot",
    "zeroshot_store": ".zeroshot",
    "ZeroShot": ".zeroshot",
    "query": ".query",
    "query_many": ".query",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
