"""Tiny deterministic encoders, registered exactly as a third-party plugin would be.

Each turns a decoded item into a few hand-made features and projects them with a seeded random
matrix to ``dim``: no weights to load, the same bytes in every process. Options for tests:
``delay`` (seconds per batch, to kill a run mid-way), ``fault`` (break the output contract).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

import embedeverything as ee

__version__ = "0.1.0"


class TestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = 16
    seed: int = 0
    delay: float = 0.0
    fault: Literal["none", "shape", "nan", "dtype"] = "none"
    min_seconds: float = 0.5  # audio only
    space: str = ""  # declare a shared space (as CLIP's towers do), for tests of identity sides
    backend: Literal["numpy", "torch"] = "numpy"  # torch: a seeded MLP, for thread-count and bf16 tests


class _TestEncoder(ee.Encoder):
    Options = TestOptions
    default_batch_size = 8
    n_features = 8

    @property
    def dim(self) -> int:  # depends on options, known without loading anything
        return self.options.dim

    @property
    def shared_space(self) -> str | None:
        return self.options.space or None

    def weights_source(self) -> str:
        return "none: seeded random projection (test encoder)"

    def load(self) -> ee.Weights:
        rng = np.random.default_rng(self.options.seed)
        self.proj = rng.standard_normal((self.n_features, self.options.dim)).astype(np.float32)
        self.net = None
        if self.options.backend == "torch":
            import torch

            g = torch.Generator().manual_seed(self.options.seed)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(self.n_features, 512), torch.nn.GELU(), torch.nn.Linear(512, self.options.dim)
            )
            with torch.no_grad():
                for p in self.net.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return ee.Weights(model_id=f"testenc/{self.name}", weights=f"seed:{self.options.seed}")

    def torch_modules(self) -> list:
        return [] if self.net is None else [self.net]

    def features(self, item) -> np.ndarray:
        raise NotImplementedError

    def embed_batch(self, items):
        # For crash tests: a process whose environment names a word dies (SIGKILL) on a batch holding it.
        die = os.environ.get("EE_TESTENC_DIE")
        if die and any(isinstance(x, str) and die in x for x in items):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.options.delay:
            time.sleep(self.options.delay)
        feats = np.stack([self.features(x) for x in items]).astype(np.float32)
        if self.net is not None:
            import torch

            out = self.net(torch.from_numpy(feats)).numpy()
        else:
            out = feats @ self.proj
        fault = self.options.fault
        if fault == "shape":
            return out[:, :-1]
        if fault == "nan":
            out[0, 0] = np.nan
        if fault == "dtype":
            return out.astype(np.int32)
        return out


class TestText(_TestEncoder):
    name, modality = "test-text", "text"

    def features(self, item: str) -> np.ndarray:
        h = np.zeros(self.n_features, dtype=np.float64)
        for word in item.lower().split():
            d = hashlib.sha256(word.encode()).digest()
            h[d[0] % self.n_features] += 1.0
        return h / max(1.0, np.linalg.norm(h))


class TestImage(_TestEncoder):
    name, modality = "test-image", "image"

    def features(self, item: np.ndarray) -> np.ndarray:
        x = item.astype(np.float64) / 255.0
        return np.concatenate(
            [x.mean(axis=(0, 1)), x.std(axis=(0, 1)), [item.shape[0] / 1000, item.shape[1] / 1000]]
        )


class TestAudio(_TestEncoder):
    name, modality = "test-audio", "audio"

    def check_item(self, item: ee.Audio) -> None:
        if item.duration < self.options.min_seconds:
            raise ee.BadItem(f"audio too short: {item.duration:.2f}s < {self.options.min_seconds}s")

    def features(self, item: ee.Audio) -> np.ndarray:
        mono = item.samples.mean(axis=0).astype(np.float64)
        spec = np.abs(np.fft.rfft(mono))
        peak = np.argmax(spec) * item.sample_rate / max(1, mono.size) / 1000.0
        zcr = np.mean(np.abs(np.diff(np.sign(mono)))) / 2
        return np.array(
            [
                mono.mean(),
                np.sqrt((mono**2).mean()),
                zcr,
                peak,
                item.duration / 10,
                item.channels,
                item.sample_rate / 48000,
                np.abs(mono).max(),
            ]
        )


@ee.hookimpl
def register_encoders(register):
    register(TestText)
    register(TestImage)
    register(TestAudio)
