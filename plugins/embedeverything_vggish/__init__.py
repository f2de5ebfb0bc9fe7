"""VGGish through torchvggish: ``vggish``, one 128-d vector per audio clip.

Any rate and channel count in -> 16 kHz mono -> log-mel examples of 0.96 s -> 128-d per example
(PCA-whitened and quantised to 0..255 by default, as upstream releases them; raw with
``postprocess=false``) -> pooled over the clip (mean, or max). Registered through the ``embedeverything``
entry point like any third-party plugin, using only the public API (``import embedeverything as ee``).
No torch import until ``load``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

import embedeverything as ee

from .features import MIN_SAMPLES, MIN_SECONDS, Resampler, log_mel_examples, samples_at_16k, to_mono_16k

__version__ = ee.__version__

ENV_WEIGHTS = "EE_VGGISH_WEIGHTS"
ENV_PCA = "EE_VGGISH_PCA"
_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
# torchvggish's release files carry the first 8 hex digits of their SHA-256 in their names: the reference
# that ships here, and what torch.hub checks when it downloads them.
WEIGHTS_NAME, WEIGHTS_PREFIX = "vggish-10086976.pth", "10086976"
PCA_NAME, PCA_PREFIX = "vggish_pca_params-970ea276.pth", "970ea276"
#: examples per model call: bounds memory for long clips
MAX_EXAMPLES_PER_CALL = 256


class VggishOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: how the per-example vectors of one clip become one
    pool: Literal["mean", "max"] = "mean"
    #: upstream's PCA whitening + 8-bit quantisation (values 0..255: normalise before training)
    postprocess: bool = True
    #: a local copy of vggish-10086976.pth (or a .safetensors state dict)
    weights: str | None = None
    #: a local copy of vggish_pca_params-970ea276.pth
    pca_params: str | None = None
    #: where downloads go and are looked for (default: torch.hub's cache, $TORCH_HOME/hub/checkpoints)
    cache_dir: str | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: build VGGish with seeded random weights (tests, offline demos): said loudly, recorded
    random_init: bool = False
    seed: int = 0
    #: soxr (fast, default) or resampy (upstream's, exact)
    resampler: Resampler = "soxr"

    @field_validator("weights", "pca_params", "cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v


class Vggish(ee.Encoder):
    """VGGish audio embeddings, one vector per clip (see the module docstring)."""

    name, modality, dim = "vggish", "audio", 128
    Options = VggishOptions
    default_batch_size = 16
    # Where the files lie does not decide the output; their SHA-256s, recorded in the identity, do.
    runtime_options = ee.Encoder.runtime_options | {"cache_dir", "weights", "pca_params"}

    # ---- weights ----------------------------------------------------------------------------------
    def _cache(self) -> Path:
        o = self.options
        return Path(o.cache_dir).expanduser() if o.cache_dir else ee.torch_hub_dir() / "checkpoints"

    def weight_files(self) -> list[ee.WeightFile]:
        """The release files ``ee weights fetch`` gets, with the hash prefix their names carry."""
        if self.options.random_init:
            return []
        files = [
            ee.WeightFile(
                WEIGHTS_NAME,
                _RELEASE + WEIGHTS_NAME,
                self._cache() / WEIGHTS_NAME,
                sha256_prefix=WEIGHTS_PREFIX,
                note="VGGish weights (torchvggish release)",
            )
        ]
        if self.options.postprocess:
            files.append(
                ee.WeightFile(
                    PCA_NAME,
                    _RELEASE + PCA_NAME,
                    self._cache() / PCA_NAME,
                    sha256_prefix=PCA_PREFIX,
                    note="VGGish PCA parameters (torchvggish release)",
                )
            )
        return files

    def _local(self, which: str) -> tuple[str | None, str]:
        o, flag = self.options, ee.option_flag()
        if which == "weights":
            return o.weights or os.environ.get(ENV_WEIGHTS) or None, (f"{flag} weights", ENV_WEIGHTS)
        return o.pca_params or os.environ.get(ENV_PCA) or None, (f"{flag} pca_params", ENV_PCA)

    def weights_source(self) -> str:
        o = self.options
        if o.random_init:
            return f"RANDOM weights (seed {o.seed}), asked for with random_init"
        parts = []
        for wf, which in zip(self.weight_files(), ("weights", "pca_params"), strict=False):
            local, _ = self._local(which)
            path = Path(local) if local else wf.path
            parts.append(f"{path} ({'found' if path.is_file() else 'MISSING' if local else 'not cached'})")
        return (
            "torchvggish release files: " + ", ".join(parts) + f"; offline: {ENV_WEIGHTS}=FILE and "
            f"{ENV_PCA}=FILE (or {ee.option_flag()} weights=, pca_params=), or `ee weights fetch vggish`"
        )

    def _resolve(self, wf: ee.WeightFile, which: str) -> tuple[str, str]:
        """(path, hex sha256) of one file: a local path, else the cache, else a download when online."""
        local, (opt, env) = self._local(which)
        if local:
            if not os.path.isfile(local):
                raise ee.UserError(f"VGGish {which} file {local!r} (from {opt} or {env}) is not a file")
            return local, ee.check_local_file(local, None, f"VGGish {which} file")
        if not wf.path.is_file() and ee.reachable(wf.url):
            import torch

            wf.path.parent.mkdir(parents=True, exist_ok=True)
            try:  # torch.hub's own downloader: temp file, prefix check, rename
                torch.hub.download_url_to_file(wf.url, str(wf.path), hash_prefix=wf.sha256_prefix)
            except Exception as e:
                raise ee.UserError(self._no_file(wf, opt, env, f"download failed: {e}")) from None
        if wf.path.is_file():
            return str(wf.path), ee.check_local_file(wf.path, wf, f"VGGish {which} file")
        raise ee.UserError(self._no_file(wf, opt, env, "github.com is unreachable"))

    def _no_file(self, wf: ee.WeightFile, opt: str, env: str, why: str) -> str:
        flag = ee.option_flag()
        return (
            f"no {wf.name} for encoder 'vggish': not at {wf.path} and {why}. Give a local copy with "
            f"{opt}=FILE or {env}=FILE; or run `ee weights fetch vggish` on a machine with internet and copy "
            f"{wf.path.parent} here (or {flag} cache_dir=DIR); or {flag} random_init=true (tests only)"
        )

    # ---- loading ----------------------------------------------------------------------------------
    def load(self) -> ee.Weights:
        import torch
        from torchvggish import VGG, make_layers

        o = self.options
        device = ee.choose_device(o.device)
        output = "pca-quantised-0-255" if o.postprocess else "raw"
        model_id = f"torchvggish/vggish:{output}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            model = VGG(make_layers(), postprocess=False)  # PCA is applied here, in fp32, below
            pca_m = torch.linalg.qr(torch.randn(128, 128))[0]
            pca_mean = torch.randn(128, 1) * 0.1
        if o.random_init:
            weights = ee.Weights(model_id=model_id, weights="random-init", seed=o.seed)
        else:
            files = self.weight_files()
            path, digest = self._resolve(files[0], "weights")
            try:
                model.load_state_dict(_load_tensors(path), strict=True)
            except Exception as e:
                raise ee.UserError(
                    f"cannot load {path} into VGGish: {type(e).__name__}: {str(e)[:300]}; "
                    f"is it {WEIGHTS_NAME}?"
                ) from None
            stated = f"sha256:{digest}"
            if o.postprocess:
                ppath, pdigest = self._resolve(files[1], "pca_params")
                try:
                    params = _load_tensors(ppath)
                    pca_m = torch.as_tensor(params["pca_eigen_vectors"]).float()
                    pca_mean = torch.as_tensor(params["pca_means"]).float().reshape(-1, 1)
                except Exception as e:
                    raise ee.UserError(
                        f"cannot read PCA parameters from {ppath}: {type(e).__name__}: {str(e)[:200]}; "
                        f"is it {PCA_NAME}?"
                    ) from None
                stated += f",pca:sha256:{pdigest}"
            weights = ee.Weights(model_id=model_id, weights=stated)
        self._torch = torch
        self._device = device
        self._dtype = torch.bfloat16 if o.precision == "bf16" else torch.float32
        self._model = model.to(self._device, self._dtype).eval()
        self._pca_matrix = pca_m.to(self._device)  # [128, 128]
        self._pca_means = pca_mean.to(self._device)  # [128, 1]
        return weights

    def torch_modules(self) -> list[Any]:
        return [self._model]

    # ---- embedding --------------------------------------------------------------------------------
    def check_item(self, item: Any) -> None:
        if samples_at_16k(item.samples.shape[1], item.sample_rate) < MIN_SAMPLES:
            raise ee.BadItem(
                f"audio too short for VGGish: {item.duration:.3f} s, needs at least {MIN_SECONDS:.3f} s "
                "(one 0.96 s example of 96 frames of 25 ms)"
            )

    def examples(self, item: Any) -> np.ndarray:
        """One decoded clip -> its log-mel examples ``[k, 96, 64]`` (float32)."""
        wave = to_mono_16k(item.samples, item.sample_rate, self.options.resampler)
        return log_mel_examples(wave)

    def postprocess(self, emb: Any) -> Any:
        """Upstream's PCA whitening, clipping to [-2, 2] and quantisation to 0..255, in fp32."""
        torch = self._torch
        pca = torch.mm(self._pca_matrix, emb.t() - self._pca_means).t()  # [k, 128]
        return torch.round((torch.clamp(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))

    def embed_examples(self, examples: np.ndarray) -> Any:
        """``[K, 96, 64]`` log-mel examples -> ``[K, 128]`` per-example vectors (fp32, on the device)."""
        torch = self._torch
        x = torch.from_numpy(examples)[:, None]  # [K, 1, 96, 64]
        outs = []
        for start in range(0, x.shape[0], MAX_EXAMPLES_PER_CALL):
            part = x[start : start + MAX_EXAMPLES_PER_CALL].to(self._device, self._dtype)
            outs.append(self._model(part).float())
        emb = torch.cat(outs)
        return self.postprocess(emb) if self.options.postprocess else emb

    def embed_batch(self, items: Sequence[Any]) -> Any:
        torch = self._torch
        per_item = [self.examples(it) for it in items]
        counts = [e.shape[0] for e in per_item]
        emb = self.embed_examples(np.concatenate(per_item))  # [sum(counts), 128]
        pooled = [
            (part.mean(0) if self.options.pool == "mean" else part.amax(0))
            for part in torch.split(emb, counts)
        ]
        return torch.stack(pooled)  # [n, 128]


def _load_tensors(path: str) -> dict[str, Any]:
    """A state dict from .safetensors or a torch file, never unpickling more than tensors and arrays."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # Upstream's PCA file holds numpy arrays: allow exactly those, still weights_only.
        import numpy

        core = getattr(numpy, "_core", None) or numpy.core
        allowed = [numpy.ndarray, numpy.dtype, core.multiarray._reconstruct]
        allowed += [type(numpy.dtype(t)) for t in ("float32", "float64", "int64")]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


@ee.hookimpl
def register_encoders(register: Any) -> None:
    register(Vggish)
