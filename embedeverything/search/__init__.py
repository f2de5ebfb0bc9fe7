"""Search what you embedded: ``ee index`` projects a store's rows through an adapter into a local LanceDB
table per side, and ``ee query`` searches it instead of scanning the store when the index is current.

Library entry points: :func:`build_index` (``ee index``) and :func:`open_index` (what ``ee query`` asks).
LanceDB (the ``[search]`` extra) is imported only inside them: ``ee --help`` never loads it or pyarrow.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "build_index": ".build",
    "IndexReport": ".build",
    "open_index": ".lookup",
    "SearchIndex": ".lookup",
    "default_index": ".state",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
