"""Raw files or texts straight into an adapter's shared space: the encoders it names, then its heads.

``pipeline(path)`` loads the adapter, builds each side's encoder by the name and options recorded in it,
loads its weights and compares identities field by field: a different model, weights hash, options or
dim would put inputs somewhere the heads never saw, so it is refused, naming the fields; a different
plugin version alone is a warning (or every upgrade would orphan old adapters).

The module is not called ``pipeline``: importing a submodule sets the package attribute of its name, which
would replace the public function ``embedeverything.pipeline`` with this module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .adapter import Adapter, load_adapter
from .decode import decode
from .encoder import Encoder, EncoderIdentity, require_same_identity
from .errors import BadItem, UserError
from .items import Audio
from .manifest import MediaRef

_KIND = {"image": "image", "audio": "audio", "text": "text"}


def side_encoder(adapter: Adapter, side: str) -> Encoder:
    """The encoder of ``side``, as the adapter records it, refused when its outputs would differ."""
    from .plugins import get_encoder

    recorded: EncoderIdentity = getattr(adapter.config, side).identity
    enc = get_encoder(recorded.name, **recorded.options)
    for msg in require_same_identity(
        recorded,
        enc.identity(),
        f"side {side} of the adapter (encoder {recorded.name!r})",
        "install or point to the weights it was trained with",
        field_prefix=f"{side}.identity.",
        labels=("adapter", "installed"),
    ):
        warnings.warn(msg, stacklevel=3)
    return enc


class Pipeline:
    """An adapter with its two encoders: ``embed_a(inputs)`` / ``embed_b(inputs)`` -> shared space."""

    def __init__(self, adapter: Adapter, encoder_a: Encoder, encoder_b: Encoder):
        self.adapter = adapter
        self.encoders = {"a": encoder_a, "b": encoder_b}

    def _items(self, side: str, inputs: Iterable[Any]) -> list[Any]:
        enc = self.encoders[side]
        items = []
        for x in inputs:
            if isinstance(x, MediaRef):
                ref: MediaRef | None = x
            elif isinstance(x, np.ndarray | Audio):
                ref, items = None, [*items, x]
                continue
            elif enc.modality == "text" and isinstance(x, str):
                ref = MediaRef(kind="text", text=x)
            elif isinstance(x, str | os.PathLike):
                kind = _KIND.get(enc.modality)
                if kind is None:
                    raise UserError(
                        f"side {side} ({enc.name}) takes {enc.modality}; pass decoded items instead of paths"
                    )
                ref = MediaRef(kind=kind, path=str(Path(x)))
            else:
                raise UserError(
                    f"side {side} ({enc.name}): cannot embed a {type(x).__name__}; pass a path or text"
                )
            try:
                items.append(decode(ref))
            except BadItem as e:
                raise UserError(f"side {side}: {ref.describe()}: {e.reason}") from None
        return items

    def _embed(self, side: str, inputs: Sequence[Any] | Any, batch_size: int | None) -> np.ndarray:
        if isinstance(inputs, str | os.PathLike | MediaRef):
            inputs = [inputs]
        enc = self.encoders[side]
        try:
            raw = enc.embed(self._items(side, inputs), batch_size=batch_size)
        except BadItem as e:
            raise UserError(f"side {side} ({enc.name}): {e.reason}") from None
        return getattr(self.adapter, side)(raw)

    def embed_a(self, inputs: Sequence[Any] | Any, batch_size: int | None = None) -> np.ndarray:
        """Files, texts or decoded items of side a -> float32 ``[n, shared_dim]``."""
        return self._embed("a", inputs, batch_size)

    def embed_b(self, inputs: Sequence[Any] | Any, batch_size: int | None = None) -> np.ndarray:
        """Files, texts or decoded items of side b -> float32 ``[n, shared_dim]``."""
        return self._embed("b", inputs, batch_size)


def pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Load an adapter and the encoders it names (weights included), checking they are the same ones."""
    adapter = load_adapter(path)
    return Pipeline(adapter, side_encoder(adapter, "a"), side_encoder(adapter, "b"))
