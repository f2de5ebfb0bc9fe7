"""Where a CLIP tower's weights come from: a local file first, then the caches, the network last.

Everything here is a function of the options (and of the encoder's name, for messages), so that
``ee encoders`` and ``ee weights`` can say where the weights are without building a model; only
:func:`resolve` needs open_clip, and only to download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import embedeverything as ee

from .known import HF_FALLBACK_FILENAME, HF_FILENAME
from .options import LOCAL_DIR, ClipOptions, known_tag

ENV_CHECKPOINT = "EE_CLIP_CHECKPOINT"
#: the weight files of a local-dir arch, in open_clip's own order of preference
LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def checkpoint(o: ClipOptions) -> str | None:
    """A local weights file: the option, the environment variable, or the one in a local-dir arch."""
    explicit = o.checkpoint or os.environ.get(ENV_CHECKPOINT)
    if explicit:
        return explicit
    if o.arch.startswith(LOCAL_DIR):
        folder = Path(o.arch[len(LOCAL_DIR) :])
        for name in LOCAL_DIR_WEIGHTS:
            if (folder / name).is_file():
                return str(folder / name)
    return None


def cache_root(o: ClipOptions) -> Path:
    return Path(o.cache_dir).expanduser() if o.cache_dir else ee.xdg_cache() / "clip"


def weight_files(o: ClipOptions) -> list[ee.WeightFile]:
    """The file ``ee weights fetch`` gets for this (arch, pretrained) and its reference hash."""
    tag = known_tag(o.arch, o.pretrained)
    if tag is None or o.random_init:
        return []
    if tag.url:
        name = tag.url.rsplit("/", 1)[-1]
        return [
            ee.WeightFile(
                name,
                tag.url,
                cache_root(o) / name,
                sha256=tag.sha256,
                sha256_prefix=tag.sha256_prefix,
                note=f"open_clip {o.arch} {o.pretrained}",
            )
        ]
    repo_dir = tag.hf_hub.replace("/", "--")
    return [
        ee.WeightFile(
            f"{repo_dir}/{HF_FILENAME}",
            f"https://huggingface.co/{tag.hf_hub}/resolve/main/{HF_FILENAME}",
            cache_root(o) / "hf" / repo_dir / HF_FILENAME,
            sha256=tag.sha256,
            note=f"open_clip {o.arch} {o.pretrained} (Hugging Face hub)",
        )
    ]


def describe(o: ClipOptions, name: str) -> str:
    """Where the weights will come from, and what to do offline (``weights_source``)."""
    if o.random_init:
        return f"RANDOM weights (seed {o.seed}), asked for with random_init"
    ckpt = checkpoint(o)
    if ckpt:
        state = "found" if os.path.isfile(ckpt) else "MISSING"
        return f"local checkpoint {ckpt} ({state})"
    cached = [f.path for f in weight_files(o) if f.path.is_file()]
    tag = known_tag(o.arch, o.pretrained)
    if not cached and tag is not None and tag.hf_hub:
        hit = ee.hf_cached_file(tag.hf_hub, HF_FILENAME, o.cache_dir) or ee.hf_cached_file(
            tag.hf_hub, HF_FALLBACK_FILENAME, o.cache_dir
        )
        cached = [hit] if hit else []
    where = f"cached at {cached[0]}" if cached else "not cached: downloads when online"
    return (
        f"open_clip {o.arch} pretrained={o.pretrained} ({where}); offline: "
        f"{ee.option_flag()} checkpoint=FILE or {ENV_CHECKPOINT}=FILE, or `ee weights fetch {name}`"
    )


def space_source(o: ClipOptions) -> str:
    """What decides the weights, for the shared space's name: the seed, the file's hash, or the tag."""
    if o.random_init:
        return f"random-init-seed-{o.seed}"
    ckpt = checkpoint(o)
    if ckpt:
        return ee.sha256_file(ckpt)[: len("sha256:") + 16] if os.path.isfile(ckpt) else f"file:{ckpt}"
    return o.pretrained or "none"


def resolve(o: ClipOptions, name: str, open_clip: Any) -> str:
    """The path of the weights file to load, looking locally first; the network only when it answers."""
    flag = ee.option_flag()
    ckpt = checkpoint(o)
    if ckpt:
        if not os.path.isfile(ckpt):
            src = f"{flag} checkpoint" if o.checkpoint else ENV_CHECKPOINT
            raise ee.UserError(f"CLIP checkpoint {ckpt!r} (from {src}) is not a file")
        return ckpt
    if not o.pretrained:
        raise ee.UserError(
            f"encoder {name!r} has no weights to load: give {flag} pretrained=TAG, "
            f"{flag} checkpoint=FILE ({ENV_CHECKPOINT}), or {flag} random_init=true for tests"
        )
    cfg = open_clip.get_pretrained_cfg(o.arch, o.pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(o.arch)) or "none"
        raise ee.UserError(
            f"open_clip has no pretrained tag {o.pretrained!r} for {o.arch}; its tags: {tags}; "
            f"or give a local file with {flag} checkpoint=FILE"
        )
    cached = _cached(o, cfg)
    if cached is not None:
        return cached
    hf_repo = cfg.get("hf_hub", "").rstrip("/")
    probe = "https://huggingface.co" if hf_repo else cfg.get("url", "")
    if probe and ee.reachable(probe):
        try:
            path = open_clip.download_pretrained(cfg, cache_dir=o.cache_dir)
        except Exception as e:  # network trouble, a repo that moved: say how to go on offline
            raise ee.UserError(no_weights(o, name, f"download failed: {type(e).__name__}: {e}")) from None
        if path:
            return str(path)
    raise ee.UserError(no_weights(o, name, f"{probe or 'no download source'} is unreachable"))


def _cached(o: ClipOptions, cfg: dict[str, Any]) -> str | None:
    """The weights of a pretrained tag already on disk: our cache, the HF hub's, open_clip's release file."""
    for wf in weight_files(o):
        if wf.path.is_file():
            return str(wf.path)
    hf_repo = cfg.get("hf_hub", "").rstrip("/")
    if hf_repo:
        for filename in (HF_FILENAME, HF_FALLBACK_FILENAME):
            hit = ee.hf_cached_file(hf_repo, filename, o.cache_dir)
            if hit is not None:
                return str(hit)
    url = cfg.get("url", "")
    if url and "openaipublic" not in url:  # OpenAI's own files are TorchScript: not loaded here
        hit = cache_root(o) / url.rsplit("/", 1)[-1]
        if hit.is_file():
            return str(hit)
    return None


def no_weights(o: ClipOptions, name: str, why: str) -> str:
    """The message for weights found nowhere: every way to provide them."""
    paths = ", ".join(str(f.path) for f in weight_files(o)) or str(cache_root(o))
    flag = ee.option_flag()
    return (
        f"no weights for {name!r} ({o.arch}, pretrained={o.pretrained}): not in the caches "
        f"({paths} or the Hugging Face hub cache) and {why}. Give a local open_clip state dict with "
        f"{flag} checkpoint=FILE or {ENV_CHECKPOINT}=FILE; or run `ee weights fetch {name}` on a "
        f"machine with internet and copy the cache here; or {flag} random_init=true (tests only)"
    )
