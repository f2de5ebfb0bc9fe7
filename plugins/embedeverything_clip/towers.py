"""The two encoders: CLIP's image tower (``clip``) and text tower (``clip-text``), built by open_clip.

torch and open_clip are imported in ``load`` only: ``ee encoders`` builds each tower to describe it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

import embedeverything as ee

from . import sources
from .options import ClipOptions, arch_dim


class _ClipTower(ee.Encoder):
    """What both towers share: option handling, finding the weights, building the model."""

    Options = ClipOptions
    # Where the file lies does not decide the output; its SHA-256, recorded in the identity, does.
    runtime_options = ee.Encoder.runtime_options | {"cache_dir", "checkpoint"}

    @property
    def dim(self) -> int:
        return arch_dim(self.options.arch)

    def weight_files(self) -> list[ee.WeightFile]:
        return sources.weight_files(self.options)

    def weights_source(self) -> str:
        return sources.describe(self.options, self.name)

    @property
    def shared_space(self) -> str | None:
        return f"open_clip:{self.options.arch}:{sources.space_source(self.options)}"

    def _build(self) -> tuple[Any, ee.Weights]:
        """The whole open_clip model, with weights, in eval mode, at the asked precision and device."""
        import open_clip

        o = self.options
        path = None if o.random_init else sources.resolve(o, self.name, open_clip)
        model = self._create(open_clip)
        if path is None:
            weights = ee.Weights(model_id=f"open_clip/{o.arch}", weights="random-init", seed=o.seed)
        else:
            wf = next((f for f in self.weight_files() if str(f.path) == path), None)
            digest = ee.check_local_file(path, wf, "CLIP weights file")
            try:
                open_clip.load_checkpoint(model, path, strict=True, weights_only=True, device="cpu")
            except Exception as e:  # wrong architecture, not a state dict, truncated file
                raise ee.UserError(
                    f"cannot load {path} into open_clip {o.arch}: {type(e).__name__}: {str(e)[:300]}; "
                    "is it a state dict of that architecture?"
                ) from None
            model_id = f"open_clip/{o.arch}/{o.pretrained or 'checkpoint'}"
            weights = ee.Weights(model_id=model_id, weights=f"sha256:{digest}")
        model.eval()
        return model, weights

    def _create(self, open_clip: Any) -> Any:
        """The architecture, seeded (random_init: the seed is the identity; else the weights overwrite it)."""
        import torch

        o = self.options
        # Quick-GELU and preprocessing follow the pretrained tag, as open_clip does when it loads a tag.
        cfg = open_clip.get_pretrained_cfg(o.arch, o.pretrained) if o.pretrained else {}
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        device = ee.choose_device(o.device)
        # open_clip logs "initialized randomly" here, true only until the weights are loaded
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            try:
                return open_clip.create_model(
                    o.arch,
                    pretrained=None,
                    load_weights=False,
                    # bf16: every weight in bfloat16 (open_clip's "pure_bf16"); its mixed "bf16" keeps
                    # LayerNorms in fp32, which costs speed and brings the output no closer to fp32
                    precision="pure_bf16" if o.precision == "bf16" else "fp32",
                    device=device,
                    force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                    force_preprocess_cfg=preprocess or None,
                )
            except (RuntimeError, ValueError, FileNotFoundError) as e:
                raise ee.UserError(f"open_clip cannot build {o.arch!r}: {e}") from None
            finally:
                logging.disable(muted)

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
        or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor")
    ):
        return None, (None, None)
    norm = steps[-1]
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return steps[:-2], (mean, std)
