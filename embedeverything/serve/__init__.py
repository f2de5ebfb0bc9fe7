"""``ee serve``: a local search page over an index of ``ee index`` (docs/search.md).

:func:`serve` runs it until interrupted; :class:`Engine` answers queries without HTTP. LanceDB, torch and
the encoders load only when a server starts: ``ee --help`` imports none of them.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Engine": ".engine",
    "SearchServer": ".http",
    "serve": ".run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
