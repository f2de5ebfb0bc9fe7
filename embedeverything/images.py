"""Any Pillow image as the RGB ``uint8`` item image encoders take, and the one option that decides how.

``convert("RGB")`` alone is wrong for two kinds of file. Deep images (16-bit PNG and TIFF, 32-bit integer
and float TIFF) are clipped to 0-255 instead of scaled, so a mid-grey 16-bit image comes out white.
Transparent images (emoji, icons, logos) show whatever colour lies under their transparent pixels, often
black; flattening them onto a background instead is the ``background`` option (default white, measured
in docs/encoders.md). These rules decide the pixels an encoder sees, so
their version and the background are part of an image encoder's identity (``Encoder.decoding``): a store
embedded under other rules is refused, not mixed.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from .errors import BadItem

#: The version of the rules below; it changes whenever a file's pixels would.
IMAGE_DECODING = "rgb8-2"

#: Modes that carry an alpha band (``La``/``RGBa`` are premultiplied; Pillow undoes that on converting).
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


class ImageDecoding(BaseModel):
    """The framework's options for decoding images, given like an image encoder's own (``--opt``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: what transparent pixels are flattened onto; ``none`` keeps the colour stored under them
    background: Literal["white", "black", "none"] = "white"

    def identity(self) -> dict[str, Any]:
        """What an encoder's identity records of these rules (``EncoderIdentity.decoding``)."""
        return {"image": IMAGE_DECODING, "background": self.background}


def has_alpha(im: Any) -> bool:
    """True when some pixel of ``im`` may be transparent: an alpha band, a tRNS key or an RGBA palette."""
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        return True
    return im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"


def image_to_rgb_array(im: Any, decoding: ImageDecoding | None = None) -> np.ndarray:
    """A PIL image of any mode as RGB uint8 ``[H, W, 3]``; also for frames held in memory.

    - ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own conversion
      (CMYK naively, without an ICC profile);
    - ``I;16*`` (16-bit): scaled, 65535 -> 255; ``I`` (32-bit int): the same when its values lie in
      0-65535 (16-bit data, as most sources give it), else stretched from its minimum to its maximum;
    - ``F`` (32-bit float): 0-1 scaled to 0-255, any other range stretched from minimum to maximum; NaN or
      infinite pixels make the file bad input;
    - transparency (``LA``, ``PA``, ``RGBA``, premultiplied ``La``/``RGBa``, a palette or colour key with
      transparency): flattened onto ``decoding.background``.
    """
    decoding = decoding or ImageDecoding()
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _deep_to_uint8(np.asarray(im), mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if decoding.background != "none" and has_alpha(im):
        from PIL import Image

        rgba = (im.convert("LA") if mode == "La" else im).convert("RGBA")  # Pillow has no La -> RGBA
        fill = (255, 255, 255, 255) if decoding.background == "white" else (0, 0, 0, 255)
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, fill), rgba)
    if im.mode == "La":
        im = im.convert("LA")
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _deep_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """One band of 16-bit, 32-bit integer or float pixels as uint8 [H, W], by the rules above."""
    x = values.astype(np.float64)
    if not np.isfinite(x).all():
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise BadItem(f"image has {bad} NaN or infinite pixel values (of {x.size})")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = x / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = x * 255.0
    elif hi > lo:
        scaled = (x - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(x)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
