"""The bundled VGGish plugin (torchvggish): upstream's log-mel examples, soxr within its stated tolerance
of resampy, local weight and PCA files loaded exactly, pooling, short audio, frozen model, bf16, cuda.

Weights cannot be downloaded here: the tests build torchvggish's real VGG, save its state dict (and PCA
parameters in upstream's format: numpy arrays in a torch file), and load them through the local-path code.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from embedeverything import Audio, BadItem, UserError, get_encoder

torch = pytest.importorskip("torch")
torchvggish = pytest.importorskip("torchvggish")

from embedeverything_vggish import features  # noqa: E402


def noise(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> Audio:
    rng = np.random.default_rng(seed)
    return Audio((0.1 * rng.standard_normal((channels, int(seconds * rate)))).astype(np.float32), rate)


def tones(seconds: float, rate: int, channels: int = 2) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    right = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)
    return Audio(np.stack([left, right][:channels]).astype(np.float32), rate)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real VGGish with seeded weights and PCA parameters, saved the way upstream's files are."""
    root = tmp_path_factory.mktemp("vggish")
    torch.manual_seed(5)
    model = torchvggish.VGG(torchvggish.make_layers(), postprocess=False).eval()
    torch.save(model.state_dict(), root / "vggish.pth")
    rng = np.random.default_rng(1)
    pca = {
        "pca_eigen_vectors": np.linalg.qr(rng.standard_normal((128, 128)))[0] * 3.0,
        "pca_means": rng.standard_normal(128) * 0.01,
    }
    torch.save(pca, root / "pca.pth")  # numpy arrays inside, as in vggish_pca_params-970ea276.pth
    return {"model": model, "weights": str(root / "vggish.pth"), "pca": str(root / "pca.pth"), "pca_np": pca}


def vggish(saved: dict, **opts) -> object:
    base = {"weights": saved["weights"], "pca_params": saved["pca"], "device": "cpu"}
    return get_encoder("vggish", **{**base, **opts})


def upstream_postprocessor(pca: dict) -> object:
    """torchvggish's own Postprocessor with our parameters (its constructor would download them)."""
    pp = object.__new__(torchvggish.Postprocessor)
    pp._pca_matrix = torch.as_tensor(pca["pca_eigen_vectors"]).float()
    pp._pca_means = torch.as_tensor(pca["pca_means"].reshape(-1, 1)).float()
    return pp


# ---- preprocessing --------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_examples_equal_upstream_waveform_to_examples_at_16k(saved: dict, channels: int) -> None:
    audio = noise(3.3, 16000, channels)
    mine = vggish(saved).examples(audio)
    # upstream takes [n, channels]
    ref = torchvggish.waveform_to_examples(audio.samples.T.squeeze(), 16000, return_tensor=False)
    assert mine.shape == (3, 96, 64) and mine.dtype == np.float32
    # bitwise: the same numpy operations on the same shapes as upstream's code, in one process
    np.testing.assert_array_equal(mine, ref.astype(np.float32))


def test_soxr_matches_resampy_within_stated_tolerance() -> None:
    """The tolerances stated in embedeverything_vggish.features, on 5 s of 44.1 kHz stereo."""
    for name, audio in (("noise", noise(5.0, 44100, 2, seed=3)), ("tones", tones(5.0, 44100))):
        a = features.log_mel_examples(features.to_mono_16k(audio.samples, 44100, "soxr"))
        b = features.log_mel_examples(features.to_mono_16k(audio.samples, 44100, "resampy"))
        assert a.shape == b.shape == (5, 96, 64)
        diff = np.abs(a - b)
        assert diff.mean() <= features.SOXR_MEAN_TOLERANCE, name
        if name == "noise":  # broadband: below the top two bands the resamplers agree closely
            low = diff[..., : features.TOP_BANDS_DIFFER[0]]
            assert low.max() <= features.SOXR_MAX_TOLERANCE_LOW_BANDS


def test_resampy_option_is_upstream_exactly(saved: dict) -> None:
    audio = tones(2.0, 22050, channels=2)
    mine = vggish(saved, resampler="resampy").examples(audio)
    ref = torchvggish.waveform_to_examples(audio.samples.T, 22050, return_tensor=False)
    # bitwise: the same operations on the same shapes as upstream's code, in one process
    np.testing.assert_array_equal(mine, ref.astype(np.float32))


# ---- weights and outputs --------------------------------------------------------------------------


def test_local_files_load_exactly_the_saved_weights(saved: dict) -> None:
    enc = vggish(saved)
    clips = [noise(2.0, 16000, seed=1), noise(3.5, 16000, seed=2)]
    got = enc.embed(clips)
    pp = upstream_postprocessor(saved["pca_np"])
    want = []
    with torch.no_grad():
        for c in clips:
            ex = torchvggish.waveform_to_examples(c.samples[0], 16000)  # [k, 1, 96, 64]
            emb = pp.postprocess(saved["model"](ex))  # upstream's PCA + quantisation
            want.append(emb.reshape(-1, 128).mean(0).numpy())
    assert got.shape == (2, 128) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.stack(want), atol=1e-4)
    ident = enc.identity()
    from embedeverything import sha256_file

    assert ident.weights == f"{sha256_file(saved['weights'])},pca:{sha256_file(saved['pca'])}"
    assert ident.model_id == "torchvggish/vggish:pca-quantised-0-255"


def test_raw_output_and_max_pool(saved: dict) -> None:
    enc = vggish(saved, postprocess=False, pool="max")
    clip = noise(3.0, 16000, seed=4)
    with torch.no_grad():
        per_example = saved["model"](torchvggish.waveform_to_examples(clip.samples[0], 16000)).numpy()
    np.testing.assert_allclose(enc.embed([clip])[0], per_example.max(0), rtol=1e-5, atol=1e-6)
    ident = enc.identity()
    assert ident.model_id == "torchvggish/vggish:raw" and ",pca:" not in ident.weights


def test_weights_from_environment_variables(saved: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EE_VGGISH_WEIGHTS", saved["weights"])
    monkeypatch.setenv("EE_VGGISH_PCA", saved["pca"])
    enc = get_encoder("vggish", device="cpu")
    assert saved["weights"] in enc.weights_source()
    clip = noise(1.5, 16000)
    # bitwise: one clip, the same batch, the same threads, the same weights
    np.testing.assert_array_equal(enc.embed([clip]), vggish(saved).embed([clip]))


def test_missing_weights_fail_fast_with_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EE_VGGISH_WEIGHTS", "EE_VGGISH_PCA"):
        monkeypatch.delenv(var, raising=False)
    enc = get_encoder("vggish", cache_dir=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        enc.ensure_loaded()
    assert time.monotonic() - t0 < 20
    msg = str(err.value)
    assert (
        "vggish-10086976.pth" in msg and "EE_VGGISH_WEIGHTS=FILE" in msg and "ee weights fetch vggish" in msg
    )


def test_corrupt_cached_file_is_refused(tmp_path: Path, saved: dict) -> None:
    # a file under the release name whose SHA-256 does not start with the name's 8 hex digits
    (tmp_path / "vggish-10086976.pth").write_bytes(Path(saved["weights"]).read_bytes())
    enc = get_encoder("vggish", cache_dir=str(tmp_path), postprocess=False)
    with pytest.raises(UserError, match="corrupt or another file"):
        enc.ensure_loaded()


def test_wrong_file_is_user_error(saved: dict) -> None:
    with pytest.raises(UserError, match="cannot load .* into VGGish"):
        vggish(saved, weights=saved["pca"]).ensure_loaded()


def test_resampling_from_44k1_stereo(saved: dict) -> None:
    enc = vggish(saved)
    out = enc.embed([tones(5.0, 44100), noise(2.0, 48000, channels=2), noise(1.0, 8000)])
    assert out.shape == (3, 128) and np.isfinite(out).all()
    assert enc.examples(tones(5.0, 44100)).shape == (5, 96, 64)


def test_too_short_audio_is_a_bad_item(saved: dict) -> None:
    enc = vggish(saved)
    ok = Audio(np.zeros((1, features.MIN_SAMPLES), np.float32), 16000)
    short = Audio(np.zeros((1, features.MIN_SAMPLES - 1), np.float32), 16000)
    enc.check_item(ok)
    assert enc.examples(ok).shape == (1, 96, 64)
    with pytest.raises(BadItem, match="too short for VGGish: 0.975 s"):
        enc.check_item(short)
    with pytest.raises(BadItem):
        enc.check_item(noise(0.5, 44100, 2))


def test_random_init_is_seeded_and_recorded() -> None:
    a = get_encoder("vggish", random_init=True, seed=3, device="cpu")
    b = get_encoder("vggish", random_init=True, seed=3, device="cpu")
    clip = noise(2.0, 16000)
    np.testing.assert_array_equal(a.embed([clip]), b.embed([clip]))  # same batch, same threads
    ident = a.identity()
    assert ident.weights == "random-init" and ident.seed == 3
    assert "RANDOM" in a.weights_source()


def test_no_gradient_reaches_the_model(saved: dict) -> None:
    enc = vggish(saved)
    enc.ensure_loaded()
    params = list(enc.torch_modules()[0].parameters())
    assert params and not any(p.requires_grad for p in params)
    with torch.enable_grad():
        out = enc.embed_checked([noise(1.2, 16000)])
    assert isinstance(out, np.ndarray) and all(p.grad is None for p in params)


def test_bf16_on_cpu_agrees_with_fp32(saved: dict) -> None:
    clips = [noise(2.0, 16000, seed=s) for s in range(4)]
    fp32 = vggish(saved, postprocess=False).embed(clips)
    bf16_enc = vggish(saved, postprocess=False, precision="bf16")
    bf16 = bf16_enc.embed(clips)
    assert bf16.dtype == np.float32
    assert next(bf16_enc.torch_modules()[0].parameters()).dtype == torch.bfloat16
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(saved: dict) -> None:
    clips = [noise(2.0, 16000, seed=s) for s in range(3)]
    cpu = vggish(saved, postprocess=False, device="cpu").embed(clips)
    gpu = vggish(saved, postprocess=False, device="cuda").embed(clips)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
