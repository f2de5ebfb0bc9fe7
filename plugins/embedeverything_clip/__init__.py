"""CLIP through open_clip: ``clip`` (image tower) and ``clip-text`` (text tower).

Registered through the ``embedeverything`` entry point like any third-party plugin, using only the
public API. Both towers of one (architecture, weights) declare the same ``shared_space``, which tells the
trainer that CLIP's side can stay as it is and that the text tower can label the other side zero-shot.

Nothing here imports torch or open_clip at import time or in ``dim``/``weights_source``: ``ee encoders``
describes these encoders from a small table and open_clip's model config JSON files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

import embedeverything as ee
from embedeverything.weights import (
    WeightFile,
    check_local_file,
    file_digest,
    hf_cached_file,
    reachable,
    xdg_cache,
)

from .known import ARCH_DIMS, HF_FALLBACK_FILENAME, HF_FILENAME, TAGS, Tag

__version__ = ee.__version__

ENV_CHECKPOINT = "EE_CLIP_CHECKPOINT"
LOCAL_DIR = "local-dir:"
LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


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


class _ClipTower(ee.Encoder):
    """What both towers share: option handling, finding the weights, building the model."""

    Options = ClipOptions
    # Where the file lies does not decide the output; its SHA-256, recorded in the identity, does.
    runtime_options = ee.Encoder.runtime_options | {"cache_dir", "checkpoint"}

    @property
    def dim(self) -> int:
        return arch_dim(self.options.arch)

    # ---- where the weights are --------------------------------------------------------------------
    def _checkpoint(self) -> str | None:
        """A local weights file: the option, the environment variable, or the one in a local-dir arch."""
        explicit = self.options.checkpoint or os.environ.get(ENV_CHECKPOINT)
        if explicit:
            return explicit
        if self.options.arch.startswith(LOCAL_DIR):
            folder = Path(self.options.arch[len(LOCAL_DIR) :])
            for name in LOCAL_DIR_WEIGHTS:  # open_clip's own order of preference
                if (folder / name).is_file():
                    return str(folder / name)
        return None

    def _cache_root(self) -> Path:
        return Path(self.options.cache_dir).expanduser() if self.options.cache_dir else xdg_cache() / "clip"

    def weight_files(self) -> list[WeightFile]:
        """The file ``ee weights fetch`` gets for this (arch, pretrained) and its reference hash."""
        o = self.options
        tag = known_tag(o.arch, o.pretrained)
        if tag is None or o.random_init:
            return []
        if tag.url:
            name = tag.url.rsplit("/", 1)[-1]
            return [
                WeightFile(
                    name,
                    tag.url,
                    self._cache_root() / name,
                    sha256=tag.sha256,
                    sha256_prefix=tag.sha256_prefix,
                    note=f"open_clip {o.arch} {o.pretrained}",
                )
            ]
        repo_dir = tag.hf_hub.replace("/", "--")
        return [
            WeightFile(
                f"{repo_dir}/{HF_FILENAME}",
                f"https://huggingface.co/{tag.hf_hub}/resolve/main/{HF_FILENAME}",
                self._cache_root() / "hf" / repo_dir / HF_FILENAME,
                sha256=tag.sha256,
                note=f"open_clip {o.arch} {o.pretrained} (Hugging Face hub)",
            )
        ]

    def weights_source(self) -> str:
        o = self.options
        if o.random_init:
            return f"RANDOM weights (seed {o.seed}), asked for with random_init"
        ckpt = self._checkpoint()
        if ckpt:
            state = "found" if os.path.isfile(ckpt) else "MISSING"
            return f"local checkpoint {ckpt} ({state})"
        files = self.weight_files()
        cached = [f.path for f in files if f.path.is_file()]
        tag = known_tag(o.arch, o.pretrained)
        if not cached and tag is not None and tag.hf_hub:
            hit = hf_cached_file(tag.hf_hub, HF_FILENAME, o.cache_dir) or hf_cached_file(
                tag.hf_hub, HF_FALLBACK_FILENAME, o.cache_dir
            )
            cached = [hit] if hit else []
        where = f"cached at {cached[0]}" if cached else "not cached: downloads when online"
        return (
            f"open_clip {o.arch} pretrained={o.pretrained} ({where}); offline: "
            f"--opt checkpoint=FILE or {ENV_CHECKPOINT}=FILE, or `ee weights fetch {self.name}`"
        )

    def _resolve_weights(self, open_clip: Any) -> tuple[str, Tag | None]:
        """The path of the weights file to load, looking locally first; the network only when it answers."""
        o = self.options
        ckpt = self._checkpoint()
        tag = known_tag(o.arch, o.pretrained)
        if ckpt:
            if not os.path.isfile(ckpt):
                src = "--opt checkpoint" if o.checkpoint else ENV_CHECKPOINT
                raise ee.UserError(f"CLIP checkpoint {ckpt!r} (from {src}) is not a file")
            return ckpt, None
        if not o.pretrained:
            raise ee.UserError(
                f"encoder {self.name!r} has no weights to load: give --opt pretrained=TAG, "
                f"--opt checkpoint=FILE ({ENV_CHECKPOINT}), or --opt random_init=true for tests"
            )
        cfg = open_clip.get_pretrained_cfg(o.arch, o.pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(o.arch)) or "none"
            raise ee.UserError(
                f"open_clip has no pretrained tag {o.pretrained!r} for {o.arch}; its tags: {tags}; "
                f"or give a local file with --opt checkpoint=FILE"
            )
        for wf in self.weight_files():
            if wf.path.is_file():
                return str(wf.path), tag
        hf_repo = cfg.get("hf_hub", "").rstrip("/")
        if hf_repo:
            for filename in (HF_FILENAME, HF_FALLBACK_FILENAME):
                hit = hf_cached_file(hf_repo, filename, o.cache_dir)
                if hit is not None:
                    return str(hit), tag
        url = cfg.get("url", "")
        if url and "openaipublic" not in url:  # OpenAI's own files are TorchScript: not loaded here
            hit = self._cache_root() / url.rsplit("/", 1)[-1]
            if hit.is_file():
                return str(hit), tag
        probe = "https://huggingface.co" if hf_repo else url
        if probe and reachable(probe):
            try:
                path = open_clip.download_pretrained(cfg, cache_dir=o.cache_dir)
            except Exception as e:  # network trouble, a repo that moved: say how to go on offline
                raise ee.UserError(self._no_weights(f"download failed: {type(e).__name__}: {e}")) from None
            if path:
                return str(path), tag
        raise ee.UserError(self._no_weights(f"{probe or 'no download source'} is unreachable"))

    def _no_weights(self, why: str) -> str:
        o = self.options
        paths = ", ".join(str(f.path) for f in self.weight_files()) or str(self._cache_root())
        return (
            f"no weights for {self.name!r} ({o.arch}, pretrained={o.pretrained}): not in the caches "
            f"({paths} or the Hugging Face hub cache) and {why}. Give a local open_clip state dict with "
            f"--opt checkpoint=FILE or {ENV_CHECKPOINT}=FILE; or run `ee weights fetch {self.name}` on a "
            f"machine with internet and copy the cache here; or --opt random_init=true (tests only)"
        )

    # ---- building -----------------------------------------------------------------------------------
    def _build(self) -> tuple[Any, ee.Weights]:
        """The whole open_clip model, with weights, in eval mode, at the asked precision and device."""
        import open_clip
        import torch

        o = self.options
        path, tag = (None, None) if o.random_init else self._resolve_weights(open_clip)
        # Quick-GELU and preprocessing follow the pretrained tag, as open_clip does when it loads a tag.
        cfg = open_clip.get_pretrained_cfg(o.arch, o.pretrained) if o.pretrained else {}
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        device = ee.choose_device(o.device)
        # open_clip logs "initialized randomly" here, true only until the weights are loaded below
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)  # random_init: the seed is the identity; else overwritten below
            try:
                model = open_clip.create_model(
                    o.arch,
                    pretrained=None,
                    load_weights=False,
                    # bf16: every weight in bfloat16 (open_clip's "pure_bf16"); its mixed "bf16" keeps
                    # LayerNorms in fp32 and runs ~1.3x slower on CPU for the same agreement with fp32
                    precision="pure_bf16" if o.precision == "bf16" else "fp32",
                    device=device,
                    force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                    force_preprocess_cfg=preprocess or None,
                )
            except (RuntimeError, ValueError, FileNotFoundError) as e:
                raise ee.UserError(f"open_clip cannot build {o.arch!r}: {e}") from None
            finally:
                logging.disable(muted)
        model_id = f"open_clip/{o.arch}/{o.pretrained or 'checkpoint'}"
        if path is None:
            weights = ee.Weights(model_id=f"open_clip/{o.arch}", weights="random-init", seed=o.seed)
        else:
            wf = next((f for f in self.weight_files() if str(f.path) == path), None)
            digest = check_local_file(path, wf, "CLIP weights file")
            try:
                open_clip.load_checkpoint(model, path, strict=True, weights_only=True, device="cpu")
            except Exception as e:  # wrong architecture, not a state dict, truncated file
                raise ee.UserError(
                    f"cannot load {path} into open_clip {o.arch}: {type(e).__name__}: {str(e)[:300]}; "
                    "is it a state dict of that architecture?"
                ) from None
            weights = ee.Weights(model_id=model_id, weights=f"sha256:{digest}")
        model.eval()
        return model, weights

    @property
    def shared_space(self) -> str | None:
        o = self.options
        if o.random_init:
            source = f"random-init-seed-{o.seed}"
        elif self._checkpoint():
            ckpt = self._checkpoint()
            source = f"sha256:{file_digest(ckpt)[:16]}" if os.path.isfile(ckpt) else f"file:{ckpt}"
        else:
            source = o.pretrained or "none"
        return f"open_clip:{o.arch}:{source}"

    def _inputs_dtype(self, torch: Any) -> Any:
        return torch.bfloat16 if self.options.precision == "bf16" else torch.float32


class ClipImage(_ClipTower):
    """CLIP's image tower: RGB images -> ``encode_image`` features (not L2-normalised)."""

    name, modality = "clip", "image"
    default_batch_size = 32

    def load(self) -> ee.Weights:
        import torch
        from open_clip.transform import PreprocessCfg, image_transform_v2

        model, weights = self._build()
        self._visual = model.visual  # the text tower is dropped: memory, not speed
        # open_clip's own inference transform for this model and tag, byte for byte
        self.preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
        self._pil_stage, self._normalize = _split_transform(self.preprocess, torch)
        self._torch = torch
        self._device_t = next(self._visual.parameters()).device
        self._dtype = self._inputs_dtype(torch)
        return weights

    def torch_modules(self) -> list[Any]:
        return [self._visual]

    def check_item(self, item: Any) -> None:
        if min(item.shape[:2]) < 1:
            raise ee.BadItem(f"empty image {item.shape}")

    def pixels(self, items: Sequence[Any]) -> Any:
        """Decoded RGB arrays -> the model's input batch ``[n, 3, S, S]`` (float32, on the CPU).

        open_clip's transform, with its last two steps (to tensor, normalise) run once on the whole
        batch instead of per image: the same float32 operations in the same order, so the same bytes
        (tests/test_clip.py compares with the transform itself), at a fraction of the per-image cost."""
        from PIL import Image

        torch = self._torch
        if self._pil_stage is None:
            return torch.stack([self.preprocess(Image.fromarray(x)) for x in items])
        arrays = []
        for x in items:
            im = Image.fromarray(x)
            for step in self._pil_stage:  # resize, centre crop, RGB
                im = step(im)
            arrays.append(np.asarray(im))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # [n, 3, S, S] uint8
        mean, std = self._normalize
        return batch.float().div(255).sub_(mean).div_(std)

    def embed_batch(self, items: Sequence[Any]) -> Any:
        x = self.pixels(items).to(self._device_t, self._dtype)
        return self._visual(x)  # [n, dim]


class ClipText(_ClipTower):
    """CLIP's text tower: prompts -> ``encode_text`` features, in the image tower's space."""

    name, modality = "clip-text", "text"
    default_batch_size = 64

    def load(self) -> ee.Weights:
        import open_clip

        model, weights = self._build()
        model.visual = None  # the image tower is dropped: memory, not speed
        self._model = model
        self.tokenizer = open_clip.get_tokenizer(self.options.arch)
        self._device_t = next(model.parameters()).device
        return weights

    def torch_modules(self) -> list[Any]:
        return [self._model]

    def embed_batch(self, items: Sequence[str]) -> Any:
        tokens = self.tokenizer(list(items)).to(self._device_t)
        return self._model.encode_text(tokens)  # [n, dim]


def _split_transform(transform: Any, torch: Any) -> tuple[list[Any] | None, tuple[Any, Any]]:
    """open_clip's Compose as (PIL steps, (mean, std)) when it ends in to-tensor + normalise, as every
    open_clip inference transform does; (None, ...) otherwise, and then it is applied whole."""
    from torchvision.transforms import Normalize

    steps = list(getattr(transform, "transforms", []))
    if (
        len(steps) < 2
        or not isinstance(steps[-1], Normalize)
        or type(steps[-2]).__name__
        not in (
            "ToTensor",
            "MaybeToTensor",
        )
    ):
        return None, (None, None)
    norm = steps[-1]
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return steps[:-2], (mean, std)


@ee.hookimpl
def register_encoders(register: Any) -> None:
    register(ClipImage)
    register(ClipText)
