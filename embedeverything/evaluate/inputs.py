"""From what a user types (files, words) to embeddings in an adapter's shared space.

Shared by ``ee zeroshot`` and ``ee query``: the encoder of one adapter side, built from the identity the
adapter records and refused if the installed one would compute something else; a file's kind from its
extension and the modality wanted (a video gives its middle frame to an image side, its audio to an
audio side).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import Adapter
from ..decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS, VIDEO_EXTENSIONS, decode
from ..encoder import Encoder
from ..errors import BadItem, UserError
from ..manifest import MediaRef


def file_kind(path: Path) -> str:
    """image, audio, video or text, by extension; a UserError for anything else."""
    ext = path.suffix.lower()
    for kind, exts in (
        ("image", IMAGE_EXTENSIONS),
        ("audio", AUDIO_EXTENSIONS),
        ("video", VIDEO_EXTENSIONS),
        ("text", TEXT_EXTENSIONS),
    ):
        if ext in exts:
            return kind
    raise UserError(
        f"{path}: unknown file type {ext or '(no extension)'!r}; expected an image, audio, video or .txt file"
    )


def ref_for(path: Path, modality: str) -> MediaRef:
    """A MediaRef reading ``path`` as ``modality`` (a video is cut to fit)."""
    kind = file_kind(path)
    if kind == "video":
        if modality == "audio":
            return MediaRef(kind="video_audio", path=str(path))
        if modality == "image":
            from ..decode import media_duration

            try:
                duration = media_duration(path)[0] or 0.0
            except BadItem as e:
                raise UserError(f"{path}: {e.reason}") from None
            return MediaRef(kind="video_frame", path=str(path), t=duration / 2)
    elif kind == modality:
        return MediaRef(kind=kind, path=str(path))  # type: ignore[arg-type]
    raise UserError(f"{path} is {kind}, but this needs {modality}")


def decode_files(paths: Sequence[str | os.PathLike[str]], modality: str) -> list[Any]:
    items = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"no such file: {path}")
        try:
            items.append(decode(ref_for(path, modality)))
        except BadItem as e:
            raise UserError(f"{path}: {e.reason}") from None
    return items


def side_for_modality(adapter: Adapter, modality: str, side: str | None = None) -> str:
    """The adapter side that takes ``modality`` (``side`` when given, checked)."""
    cfg = adapter.config
    if side is not None:
        if side not in ("a", "b"):
            raise UserError(f"side must be a or b, not {side!r}")
        have = getattr(cfg, side).identity.modality
        if have != modality:
            raise UserError(f"side {side} ({getattr(cfg, side).identity.name}) takes {have}, not {modality}")
        return side
    sides = [s for s in ("a", "b") if getattr(cfg, s).identity.modality == modality]
    if not sides:
        raise UserError(
            f"the adapter takes {cfg.a.identity.modality} (a, {cfg.a.identity.name}) and "
            f"{cfg.b.identity.modality} (b, {cfg.b.identity.name}), not {modality}"
        )
    return sides[0]


def embed_items(adapter: Adapter, side: str, encoder: Encoder, items: Sequence[Any]) -> np.ndarray:
    """Decoded items -> the shared space through ``side``'s head, float32 ``[n, shared_dim]``."""
    try:
        raw = encoder.embed(list(items))
    except BadItem as e:
        raise UserError(f"side {side} ({encoder.name}): {e.reason}") from None
    return np.asarray(getattr(adapter, side)(raw), dtype=np.float32)
