"""Raw files or texts straight into an adapter's shared space: the encoders it names, then its heads.

``pipeline(path)`` loads the adapter, builds each side's encoder by the name and options recorded in it,
loads its weights and compares identities field by field: a different model, weights hash, options or
dim would put inputs somewhere the heads never saw, so it is refused, naming the fields; a different
plugin version alone is a warning (or every upgrade would orphan old adapters).

The rules for turning what a user gives into an encoder's items live here once, for the public pipeline
and for ``ee query`` / ``ee zeroshot`` alike: a file's kind comes from its extension and must be the
side's modality, except that a video gives its middle frame to an image side and its audio to an audio
side; a string is text for a text side and a path otherwise.

Words reach a side that is not text through the text tower of its space (``find_text_tower``): found
through the encoders' shared-space declaration, never by name:

1. a side whose encoder is itself text (``minilm``): that encoder, through that side's head;
2. otherwise a side that declares a ``shared_space``: among the installed text encoders, the one that
   declares the same space when built with that side's options (those it accepts). Its embeddings live in
   that side's raw space, so they go through that side's head (an identity head for ``clip``).

The module is not called ``pipeline``: importing a submodule sets the package attribute of its name, which
would replace the public function ``embedeverything.pipeline`` with this module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .adapter import Adapter, load_adapter
from .decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS, VIDEO_EXTENSIONS, decode
from .encoder import Encoder, EncoderIdentity, require_same_identity
from .errors import BadItem, EEWarning, UserError
from .images import ImageDecoding
from .items import Audio
from .manifest import MediaRef

#: modalities a file can be read as; any other takes decoded items only
FILE_MODALITIES = ("image", "audio", "text")


def side_encoder(adapter: Adapter, side: str) -> Encoder:
    """The encoder of ``side``, as the adapter records it, refused when its outputs would differ."""
    from .plugins import get_encoder

    recorded: EncoderIdentity = getattr(adapter.config, side).identity
    enc = get_encoder(recorded.name, **recorded.encoder_options())
    for msg in require_same_identity(
        recorded,
        enc.identity(),
        f"side {side} of the adapter (encoder {recorded.name!r})",
        "install or point to the weights it was trained with",
        field_prefix=f"{side}.identity.",
        labels=("adapter", "installed"),
    ):
        warnings.warn(msg, EEWarning, stacklevel=3)
    return enc


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
            from .decode import media_duration

            try:
                duration = media_duration(path)[0] or 0.0
            except BadItem as e:
                raise UserError(f"{path}: {e.reason}") from None
            return MediaRef(kind="video_frame", path=str(path), t=duration / 2)
    elif kind == modality:
        return MediaRef(kind=kind, path=str(path))  # type: ignore[arg-type]
    raise UserError(f"{path} is {kind}, but this needs {modality}")


def input_ref(x: Any, modality: str, who: str) -> MediaRef | None:
    """Where input ``x`` for an encoder of ``modality`` is read from; None when it is decoded already.

    ``who`` names the side in messages (``side b (clip)``).
    """
    if isinstance(x, MediaRef):
        return x
    if isinstance(x, np.ndarray | Audio):
        return None
    if modality == "text" and isinstance(x, str):
        return MediaRef(kind="text", text=x)
    if isinstance(x, str | os.PathLike):
        if modality not in FILE_MODALITIES:
            raise UserError(f"{who} takes {modality}; pass decoded items instead of paths")
        return ref_for(Path(x), modality)
    raise UserError(f"{who}: cannot embed a {type(x).__name__}; pass a path or text")


def _looks_like_file(x: str) -> bool:
    return (
        Path(x).exists()
        or Path(x).suffix.lower() in IMAGE_EXTENSIONS | AUDIO_EXTENSIONS | VIDEO_EXTENSIONS | TEXT_EXTENSIONS
    )


def decode_files(
    paths: Sequence[str | os.PathLike[str]], modality: str, image: ImageDecoding | None = None
) -> list[Any]:
    """Files a user named as items of ``modality``; a missing or undecodable one stops with its name.

    ``image``: the image decoding of the encoder that takes them (``Encoder.decoding``)."""
    items = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise UserError(f"no such file: {path}")
        ref = input_ref(path, modality, str(path))
        try:
            items.append(decode(ref, None, image))  # type: ignore[arg-type]
        except BadItem as e:
            raise UserError(f"{path}: {e.reason}") from None
    return items


def embed_items(
    adapter: Adapter, side: str, encoder: Encoder, items: Sequence[Any], batch_size: int | None = None
) -> np.ndarray:
    """Decoded items -> the shared space through ``side``'s head, float32 ``[n, shared_dim]``."""
    try:
        raw = encoder.embed(list(items), batch_size=batch_size)
    except BadItem as e:
        raise UserError(f"side {side} ({encoder.name}): {e.reason}") from None
    return np.asarray(getattr(adapter, side)(raw), dtype=np.float32)


@dataclass
class TextTower:
    side: str  # the adapter side whose head text goes through
    encoder: Encoder
    how: str  # said to the user


def _candidate_text_encoders(adapter: Adapter, side: str) -> list[Encoder]:
    from .plugins import get_encoder, registry

    ident = getattr(adapter.config, side).identity
    found = []
    for name, entry in sorted(registry().encoders.items()):
        if entry.cls.modality != "text":
            continue
        accepted = set(getattr(entry.cls.Options, "model_fields", {}))
        opts = {k: v for k, v in ident.options.items() if k in accepted}
        try:
            enc = get_encoder(name, **opts)
            space = enc.shared_space
        except Exception:  # a text encoder that cannot take these options is simply not a candidate
            continue
        if space is not None and space == ident.shared_space:
            found.append(enc)
    # the encoder's own plugin first (CLIP's text tower for CLIP's image tower)
    found.sort(key=lambda e: (e.plugin_name != ident.plugin, e.name))
    return found


def find_text_tower(adapter: Adapter) -> TextTower:
    """The text encoder whose output lands in the adapter's shared space; a UserError when none does."""
    cfg = adapter.config
    for side in ("a", "b"):
        if getattr(cfg, side).identity.modality == "text":
            enc = side_encoder(adapter, side)
            return TextTower(side, enc, f"side {side} is text ({enc.name})")
    for side in ("a", "b"):
        ident = getattr(cfg, side).identity
        if ident.shared_space is None:
            continue
        found = _candidate_text_encoders(adapter, side)
        if found:
            enc = found[0]
            if int(enc.dim) != ident.dim:
                raise UserError(
                    f"text encoder {enc.name!r} declares {ident.name}'s space but has dim {enc.dim}, not {ident.dim}"
                )
            enc.ensure_loaded()
            return TextTower(side, enc, f"{enc.name} shares {ident.name}'s space {ident.shared_space!r}")
    spaces = [f"{s}: {getattr(cfg, s).identity.name} ({getattr(cfg, s).identity.shared_space})" for s in "ab"]
    raise UserError(
        "words need a text encoder in the adapter's space: neither side is text, and no installed text "
        f"encoder declares the shared space of a side ({'; '.join(spaces)}); install one (clip-text for clip)"
    )


class Pipeline:
    """An adapter with its two encoders: ``embed_a(inputs)`` / ``embed_b(inputs)`` -> shared space, and
    ``embed_text(texts)`` for words, through a text side or the text tower of a side's space."""

    def __init__(self, adapter: Adapter, encoder_a: Encoder, encoder_b: Encoder):
        self.adapter = adapter
        self.encoders = {"a": encoder_a, "b": encoder_b}
        self._tower: TextTower | None = None

    def _items(self, side: str, inputs: Iterable[Any]) -> list[Any]:
        enc = self.encoders[side]
        items = []
        for x in inputs:
            who = f"side {side} ({enc.name})"
            if isinstance(x, str) and enc.modality != "text" and not _looks_like_file(x):
                raise UserError(
                    f"{who} takes {enc.modality} files, and {x!r} is none; for words use embed_text"
                )
            ref = input_ref(x, enc.modality, who)
            if ref is None:
                items.append(x)
                continue
            try:
                items.append(decode(ref, None, enc.decoding))
            except BadItem as e:
                raise UserError(f"side {side}: {ref.describe()}: {e.reason}") from None
        return items

    def _embed(self, side: str, inputs: Sequence[Any] | Any, batch_size: int | None) -> np.ndarray:
        if isinstance(inputs, str | os.PathLike | MediaRef):
            inputs = [inputs]
        items = self._items(side, inputs)
        return embed_items(self.adapter, side, self.encoders[side], items, batch_size)

    def embed_a(self, inputs: Sequence[Any] | Any, batch_size: int | None = None) -> np.ndarray:
        """Files (as ``ee query`` takes them, videos included), texts or decoded items of side a ->
        float32 ``[n, shared_dim]``."""
        return self._embed("a", inputs, batch_size)

    def embed_b(self, inputs: Sequence[Any] | Any, batch_size: int | None = None) -> np.ndarray:
        """Files (as ``ee query`` takes them, videos included), texts or decoded items of side b ->
        float32 ``[n, shared_dim]``."""
        return self._embed("b", inputs, batch_size)

    @property
    def text_tower(self) -> TextTower:
        """How words reach the shared space (as ``ee query "words"`` does); a UserError when they cannot."""
        if self._tower is None:
            text_sides = [s for s in ("a", "b") if self.encoders[s].modality == "text"]
            if text_sides:  # the side's own encoder, already loaded
                s = text_sides[0]
                self._tower = TextTower(s, self.encoders[s], f"side {s} is text ({self.encoders[s].name})")
            else:
                self._tower = find_text_tower(self.adapter)
        return self._tower

    def embed_text(self, texts: Sequence[str] | str, batch_size: int | None = None) -> np.ndarray:
        """Words -> float32 ``[n, shared_dim]``: through a text side, or through the text encoder that
        shares a side's space (CLIP's text tower for a CLIP image side), as ``ee query`` embeds them."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        tower = self.text_tower
        return embed_items(self.adapter, tower.side, tower.encoder, texts, batch_size)


def pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Load an adapter and the encoders it names (weights included), checking they are the same ones."""
    adapter = load_adapter(path)
    return Pipeline(adapter, side_encoder(adapter, "a"), side_encoder(adapter, "b"))
