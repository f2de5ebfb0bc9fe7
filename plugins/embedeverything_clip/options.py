"""The CLIP towers' options, and what they imply without importing open_clip (which imports torch).

``ee encoders`` states each tower's ``dim`` and validates ``--opt arch=...`` from a small table and
open_clip's model config JSON files, found on disk.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from .known import ARCH_DIMS, TAGS, Tag

#: ``arch=local-dir:PATH``: an open_clip model folder (open_clip_config.json beside the weights)
LOCAL_DIR = "local-dir:"


def open_clip_config_dir() -> Path | None:
    """open_clip's bundled model configs, found without importing open_clip (and so torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def model_config(arch: str) -> dict[str, Any] | None:
    """open_clip's model config of ``arch`` (a built-in name or ``local-dir:PATH``), read as JSON."""
    if arch.startswith(LOCAL_DIR):
        path = Path(arch[len(LOCAL_DIR) :]) / "open_clip_config.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text()).get("model_cfg")
    folder = open_clip_config_dir()
    if folder is None or not (folder / f"{arch}.json").is_file():
        return None
    return json.loads((folder / f"{arch}.json").read_text())


def arch_dim(arch: str) -> int:
    """The embedding width of ``arch``; ValueError naming the way out when it is unknown."""
    if arch in ARCH_DIMS:
        return ARCH_DIMS[arch]
    cfg = model_config(arch)
    if cfg is None or "embed_dim" not in cfg:
        raise ValueError(
            f"unknown architecture {arch!r}: use one of {', '.join(ARCH_DIMS)}, another open_clip model "
            f"name, or local-dir:PATH (a folder with open_clip_config.json)"
        )
    return int(cfg["embed_dim"])


def known_tag(arch: str, tag: str | None) -> Tag | None:
    """Where the file of a pretrained tag we know comes from (``known.TAGS``), or None."""
    if not tag:
        return None
    tag = tag.lower().replace("-", "_")
    return TAGS.get((arch, tag)) or TAGS.get((arch.removesuffix("-quickgelu"), tag))


class ClipOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: open_clip architecture name, or ``local-dir:PATH`` (a folder with open_clip_config.json)
    arch: str = "ViT-B-32"
    #: open_clip pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...); also decides the preprocessing
    pretrained: str | None = "openai"
    #: a local open_clip state dict (.safetensors, .bin, .pt): used instead of downloading
    checkpoint: str | None = None
    #: where downloads go and are looked for (default: open_clip's and the HF hub's usual caches)
    cache_dir: str | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: build the architecture with seeded random weights (tests, offline demos): said loudly, recorded
    random_init: bool = False
    seed: int = 0

    @field_validator("pretrained", "checkpoint", "cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v

    @model_validator(mode="after")
    def _arch_known(self) -> ClipOptions:
        arch_dim(self.arch)  # raises ValueError naming the way out
        return self
