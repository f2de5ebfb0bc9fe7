"""The bundled CLIP plugin (open_clip): dims without torch, weights from local files, upstream's
preprocessing, frozen towers, precision and device options, and `ee embed` end to end.

Weights cannot be downloaded here, so the tests build the real architectures with open_clip, save a state
dict to a file, and load it back through the local-checkpoint path. Mechanics use a tiny open_clip config
(``local-dir:``, open_clip's own schema); one test uses the real ViT-B-32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedeverything import UserError, get_encoder

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

TINY_CFG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny open_clip model: its local-dir arch, a saved state dict, and the in-memory model."""
    root = tmp_path_factory.mktemp("tiny_clip")
    arch_dir = root / "arch"
    arch_dir.mkdir()
    (arch_dir / "open_clip_config.json").write_text(json.dumps(TINY_CFG))
    arch = f"local-dir:{arch_dir}"
    torch.manual_seed(123)
    model, _, preprocess = open_clip.create_model_and_transforms(arch)
    model.eval()
    from safetensors.torch import save_file

    ckpt = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return {"arch": arch, "ckpt": str(ckpt), "model": model, "preprocess": preprocess}


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(37, 53), (64, 48), (20, 90), (32, 32)]
    return [rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def clip(tiny: dict, **opts) -> object:
    base = {"arch": tiny["arch"], "pretrained": None, "checkpoint": tiny["ckpt"], "device": "cpu"}
    return get_encoder("clip", **{**base, **opts})


# ---- describing without torch -------------------------------------------------------------------


def test_dim_table_matches_open_clip_model_configs() -> None:
    from embedeverything_clip import open_clip_config_dir
    from embedeverything_clip.known import ARCH_DIMS

    folder = open_clip_config_dir()
    for arch, dim in ARCH_DIMS.items():
        cfg = json.loads((folder / f"{arch}.json").read_text())
        assert cfg["embed_dim"] == dim, arch


def test_known_tags_match_open_clip_registry() -> None:
    from embedeverything_clip.known import TAGS

    for (arch, tag), known in TAGS.items():
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        assert cfg, (arch, tag)
        assert cfg["hf_hub"].rstrip("/") == known.hf_hub, (arch, tag)
        if known.url:
            assert cfg["url"] == known.url
            # the reference prefix is the one open_clip's release file name carries
            assert Path(known.url).stem.split("-")[-1] == known.sha256_prefix


def test_listing_and_help_do_not_import_torch() -> None:
    code = (
        "import sys, json, io, contextlib\n"
        "from embedeverything.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    for argv in (['--help'], ['encoders', '--json']):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvggish', 'lancedb', 'pyarrow') if m in sys.modules]\n"
        "out = buf.getvalue()\n"
        "print(json.dumps({'heavy': heavy, 'listing': json.loads(out[out.index('{\\n'):])}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EE_LOAD_PLUGINS"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    rows = {r["name"]: r for r in got["listing"]["encoders"]}
    assert rows["clip"]["modality"] == "image" and rows["clip"]["dim"] == 512
    assert rows["clip-text"]["modality"] == "text" and rows["clip-text"]["dim"] == 512
    assert rows["vggish"]["modality"] == "audio" and rows["vggish"]["dim"] == 128
    assert "EE_CLIP_CHECKPOINT" in rows["clip"]["weights"]
    assert "EE_VGGISH_WEIGHTS" in rows["vggish"]["weights"]
    assert rows["clip"]["shared_space"] == rows["clip-text"]["shared_space"] == "open_clip:ViT-B-32:openai"
    assert {"test-image", "test-text", "test-audio"} <= set(rows)


def test_dim_follows_arch_and_bad_arch_is_user_error() -> None:
    assert get_encoder("clip", arch="ViT-L-14").dim == 768
    assert get_encoder("clip-text", arch="RN50").dim == 1024
    assert get_encoder("clip", arch="ViT-S-32").dim == 384  # not in the table: read from open_clip's JSON
    with pytest.raises(UserError, match="unknown architecture 'ViT-Q-99'"):
        get_encoder("clip", arch="ViT-Q-99")


def test_shared_space_is_the_same_for_both_towers() -> None:
    a = get_encoder("clip", pretrained="laion2b_s34b_b79k")
    b = get_encoder("clip-text", pretrained="laion2b_s34b_b79k")
    assert a.shared_space == b.shared_space == "open_clip:ViT-B-32:laion2b_s34b_b79k"
    assert get_encoder("clip").shared_space != a.shared_space


# ---- weights --------------------------------------------------------------------------------------


def test_local_checkpoint_loads_exactly_the_saved_weights(tiny: dict) -> None:
    from PIL import Image

    enc = clip(tiny)
    imgs = images(5)
    got = enc.embed(imgs, batch_size=2)
    with torch.no_grad():
        x = torch.stack([tiny["preprocess"](Image.fromarray(im)) for im in imgs])
        want = tiny["model"].encode_image(x).numpy()
    assert got.shape == (5, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ident = enc.identity()
    from embedeverything import sha256_file

    assert ident.weights == sha256_file(tiny["ckpt"])
    assert ident.seed is None and ident.model_id.startswith("open_clip/")


def test_text_tower_from_local_checkpoint(tiny: dict) -> None:
    enc = get_encoder("clip-text", arch=tiny["arch"], pretrained=None, checkpoint=tiny["ckpt"], device="cpu")
    texts = ["a dog barking", "church bells", "a car engine"]
    got = enc.embed(texts)
    tok = open_clip.get_tokenizer(tiny["arch"])
    with torch.no_grad():
        want = tiny["model"].encode_text(tok(texts)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert enc.shared_space == clip(tiny).shared_space


def test_checkpoint_from_environment_variable(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EE_CLIP_CHECKPOINT", tiny["ckpt"])
    enc = get_encoder("clip", arch=tiny["arch"], pretrained=None, device="cpu")
    assert tiny["ckpt"] in enc.weights_source()
    np.testing.assert_allclose(enc.embed(images(2)), clip(tiny).embed(images(2)), rtol=1e-6)


def test_weights_inside_a_local_dir_arch(tiny: dict, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny["arch"][len("local-dir:") :], folder)
    shutil.copy(tiny["ckpt"], folder / "open_clip_model.safetensors")
    enc = get_encoder("clip", arch=f"local-dir:{folder}", pretrained=None, device="cpu")
    assert "open_clip_model.safetensors" in enc.weights_source()
    # bitwise: the same weights, the same batch of two, the same threads
    np.testing.assert_array_equal(enc.embed(images(2)), clip(tiny).embed(images(2)))


def test_missing_weights_fail_fast_with_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EE_CLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    enc = get_encoder("clip", cache_dir=str(tmp_path / "cache"), device="cpu")
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        enc.ensure_loaded()
    assert time.monotonic() - t0 < 20  # no long network timeout
    msg = str(err.value)
    assert "--opt checkpoint=FILE" in msg and "EE_CLIP_CHECKPOINT" in msg and "ee weights fetch clip" in msg


def test_bad_checkpoint_and_unknown_tag_are_user_errors(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot load .* into open_clip ViT-B-32"):
        get_encoder("clip", arch="ViT-B-32", pretrained=None, checkpoint=tiny["ckpt"]).ensure_loaded()
    with pytest.raises(UserError, match="is not a file"):
        get_encoder("clip", checkpoint=str(tmp_path / "nope.pt")).ensure_loaded()
    with pytest.raises(UserError, match="no pretrained tag 'no_such_tag'"):
        get_encoder("clip", pretrained="no_such_tag").ensure_loaded()


def test_random_init_is_seeded_and_recorded(tiny: dict) -> None:
    a = clip(tiny, checkpoint=None, random_init=True, seed=7)
    b = clip(tiny, checkpoint=None, random_init=True, seed=7)
    c = clip(tiny, checkpoint=None, random_init=True, seed=8)
    imgs = images(3)
    np.testing.assert_array_equal(a.embed(imgs), b.embed(imgs))  # same batch, same threads
    assert not np.allclose(a.embed(imgs), c.embed(imgs))
    ident = a.identity()
    assert ident.weights == "random-init" and ident.seed == 7
    assert "random-init" in a.shared_space


# ---- preprocessing, freezing, precision, device -------------------------------------------------


def test_vit_b32_real_architecture_roundtrip_and_upstream_transform(tmp_path: Path) -> None:
    """ViT-B-32 as open_clip builds it for the openai tag: quick-GELU, the tag's transform."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True).eval()
    ckpt = tmp_path / "vitb32.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    enc = get_encoder("clip", pretrained="openai", checkpoint=str(ckpt), device="cpu")
    imgs = images(2, seed=3)
    got = enc.embed(imgs)
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    upstream = image_transform_v2(
        PreprocessCfg(
            **{"size": 224, **{k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode")}}
        ),
        is_train=False,
    )
    x = torch.stack([upstream(Image.fromarray(im)) for im in imgs])
    assert torch.equal(enc.pixels(imgs), x)  # byte for byte
    with torch.no_grad():
        want = model.encode_image(x).numpy()
    assert got.shape == (2, 512)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_preprocessing_equals_open_clip_transform(tiny: dict) -> None:
    from PIL import Image

    enc = clip(tiny)
    enc.ensure_loaded()
    imgs = images(4, seed=9)
    want = torch.stack([tiny["preprocess"](Image.fromarray(im)) for im in imgs])
    assert torch.equal(enc.pixels(imgs), want)


def test_no_gradient_reaches_the_towers(tiny: dict) -> None:
    for enc in (
        clip(tiny),
        get_encoder("clip-text", arch=tiny["arch"], pretrained=None, checkpoint=tiny["ckpt"]),
    ):
        enc.ensure_loaded()
        params = [p for m in enc.torch_modules() for p in m.parameters()]
        assert params and not any(p.requires_grad for p in params)
        assert all(not m.training for m in enc.torch_modules())
        with torch.enable_grad():
            out = enc.embed_checked(images(2) if enc.modality == "image" else ["a", "b"])
        assert isinstance(out, np.ndarray)
        assert all(p.grad is None for p in params)


def test_bf16_on_cpu_agrees_with_fp32(tiny: dict) -> None:
    fp32 = clip(tiny)
    bf16 = clip(tiny, precision="bf16")
    imgs = images(6, seed=4)
    a, b = fp32.embed(imgs), bf16.embed(imgs)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert any(p.dtype == torch.bfloat16 for p in bf16.torch_modules()[0].parameters())
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    texts = ["a dog barking", "church bells"]
    text_opts = {"arch": tiny["arch"], "pretrained": None, "checkpoint": tiny["ckpt"], "device": "cpu"}
    t32 = get_encoder("clip-text", **text_opts).embed(texts)
    t16 = get_encoder("clip-text", precision="bf16", **text_opts).embed(texts)
    cos = (t32 * t16).sum(1) / np.linalg.norm(t32, axis=1) / np.linalg.norm(t16, axis=1)
    assert cos.min() > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(tiny: dict) -> None:
    cpu = clip(tiny, device="cpu")
    gpu = clip(tiny, device="cuda")
    imgs = images(4)
    np.testing.assert_allclose(gpu.embed(imgs), cpu.embed(imgs), rtol=1e-3, atol=1e-4)
    assert next(gpu.torch_modules()[0].parameters()).is_cuda


def test_device_cuda_without_gpu_is_user_error(tiny: dict) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(UserError, match="device=cuda"):
        clip(tiny, device="cuda").ensure_loaded()


# ---- ee embed, end to end -------------------------------------------------------------------------


def test_ee_embed_clip_and_vggish_random_init(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ee embed` over generated png + wav files: clip on side a, vggish on side b, one clip too short."""
    import soundfile as sf
    from PIL import Image

    from embedeverything.cli import main
    from embedeverything.manifest import MediaRef, Pair, write_manifest
    from embedeverything.store import DONE, FAILED, Store

    rng = np.random.default_rng(0)
    pairs = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        seconds = 0.5 if i == 3 else 2.0  # pair 3: shorter than one VGGish example
        wave = (0.1 * rng.standard_normal((int(44100 * seconds), 2))).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", wave, 44100)
        pairs.append(
            Pair(
                id=f"p{i}",
                a=MediaRef(kind="image", path=f"{i}.png"),
                b=MediaRef(kind="audio", path=f"{i}.wav"),
            )
        )
    manifest = tmp_path / "pairs.jsonl"
    write_manifest(manifest, pairs, a="image", b="audio")
    store = str(tmp_path / "store.zarr")
    for var in ("EE_VGGISH_WEIGHTS", "EE_VGGISH_PCA"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as ex:
            main(list(argv))
        return int(ex.value.code)

    common = ["--store", store, "--decode-workers", "1", "--threads", "1"]
    clip_opts = [
        "-o",
        f"arch={tiny['arch']}",
        "-o",
        "pretrained=",
        "-o",
        "random_init=true",
        "-o",
        "device=cpu",
    ]
    assert run("embed", str(manifest), "-e", "clip", "--side", "a", *clip_opts, *common) == 0
    assert run("embed", str(manifest), "-e", "vggish", "--side", "b", "-o", "random_init=true", *common) == 1

    # no weights anywhere (this machine is offline): a user's mistake, exit 2, with the way out
    other = ["--store", str(tmp_path / "other.zarr"), *common[2:]]
    assert (
        run("embed", str(manifest), "-e", "vggish", "--side", "b", "-o", f"cache_dir={tmp_path}", *other) == 2
    )
    assert "EE_VGGISH_WEIGHTS=FILE" in capsys.readouterr().err

    st = Store.open(store)
    a = st.find(side="a", encoder="clip")[0]
    b = st.find(side="b", encoder="vggish")[0]
    assert a.dim == 32 and b.dim == 128
    assert (a.state() == DONE).all()
    assert list(b.state()) == [DONE, DONE, DONE, FAILED, DONE, DONE]
    assert "too short" in str(b.errors()[3])
    assert a.identity.weights == "random-init" and a.identity.seed == 0
    assert b.identity.model_id == "torchvggish/vggish:pca-quantised-0-255"
    vals = b.read()
    assert np.isfinite(vals).all() and vals[[0, 1, 2, 4, 5]].max() <= 255.0
