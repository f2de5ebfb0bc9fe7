"""Adapters: round trip, every refusal (by field name), and the pipeline from raw files to the space."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from test_train import make_store

import embedeverything as ee
from embedeverything.adapter import (
    FORMAT_VERSION,
    META_CONFIG,
    META_HASH,
    _digest,
    load_adapter,
    read_adapter_file,
)
from embedeverything.errors import UserError
from embedeverything.manifest import MediaRef, Pair
from embedeverything.plugins import get_encoder
from embedeverything.store import DONE, Store
from embedeverything.train import make_config, train

FAST = dict(checkpoint_every_s=0, threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapter")
    make_store(tmp / "s.zarr", n=300)
    res = train(str(tmp / "s.zarr"), None, None, tmp / "out", make_config(epochs=3, head_kind="mlp", **FAST))
    return res.adapter_path


def _raw(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _write(path, meta, tensors, resign=True):
    if resign:
        meta = {**meta, META_HASH: _digest(meta[META_CONFIG], tensors)}
    save_file(tensors, str(path), metadata=meta)
    return path


def test_round_trip(trained, tmp_path):
    ad = load_adapter(trained)
    assert isinstance(ad, torch.nn.Module)
    cfg = ad.config
    assert cfg.format_version == FORMAT_VERSION and cfg.shared_dim == 256
    assert cfg.a.identity.name == "enca" and cfg.b.identity.dim == 16
    assert cfg.a.head.kind == "mlp" and cfg.loss.name == "clip" and "logit_scale" in cfg.loss.learned
    assert cfg.training.rows > 0 and cfg.training.row_ids_sha256.startswith("sha256:")
    assert cfg.training.split["seed"] == 0 and "val_r1" in cfg.metrics
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    za = ad.a(x)
    assert isinstance(za, np.ndarray) and za.shape == (5, 256)
    assert torch.equal(ad.a(torch.from_numpy(x)), torch.from_numpy(za))
    # saved again from the loaded heads: identical bytes of tensors and config
    from embedeverything.adapter import save_adapter

    again = save_adapter(tmp_path / "again.safetensors", cfg, ad.a.head, ad.b.head)
    c2, t2 = read_adapter_file(again)
    _, t1 = read_adapter_file(trained)
    assert c2 == cfg and all(torch.equal(t1[k], t2[k]) for k in t1)
    assert ee.load_adapter is load_adapter


def test_refuses_tampered_tensor_and_config(trained, tmp_path):
    meta, tensors = _raw(trained)
    bad = {k: v.clone() for k, v in tensors.items()}
    name = sorted(bad)[0]
    bad[name].view(-1)[0] += 1e-3
    with pytest.raises(UserError, match="tampered"):
        load_adapter(_write(tmp_path / "t.safetensors", meta, bad, resign=False))
    cfg = json.loads(meta[META_CONFIG])
    cfg["metrics"]["val_r1"] = 1.0
    with pytest.raises(UserError, match="tampered"):
        load_adapter(
            _write(tmp_path / "c.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors, resign=False)
        )


def test_refuses_newer_format_version(trained, tmp_path):
    meta, tensors = _raw(trained)
    cfg = json.loads(meta[META_CONFIG])
    cfg["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(UserError, match=f"format_version {FORMAT_VERSION + 1} is newer.*upgrade"):
        load_adapter(_write(tmp_path / "v.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))


def test_refuses_bad_config_fields_by_name(trained, tmp_path):
    meta, tensors = _raw(trained)
    cfg = json.loads(meta[META_CONFIG])
    cfg["b"]["head"]["kind"] = "transformer"
    with pytest.raises(UserError, match=r"b\.head\.kind"):
        load_adapter(_write(tmp_path / "k.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))
    cfg = json.loads(meta[META_CONFIG])
    cfg["a"]["identity"]["dim"] = 33
    with pytest.raises(UserError, match=r"a\.head\.in_dim \(32\) != a\.identity\.dim \(33\)"):
        load_adapter(_write(tmp_path / "d.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))
    cfg = json.loads(meta[META_CONFIG])
    cfg["surprise"] = 1
    with pytest.raises(UserError, match="surprise"):
        load_adapter(_write(tmp_path / "x.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))


def test_refuses_non_finite_weights(trained, tmp_path):
    meta, tensors = _raw(trained)
    bad = {k: v.clone() for k, v in tensors.items()}
    name = next(k for k in sorted(bad) if k.endswith("weight"))
    bad[name].view(-1)[3] = float("nan")
    with pytest.raises(UserError, match=f"tensor '{name}' holds NaN"):
        load_adapter(_write(tmp_path / "n.safetensors", meta, bad))


def test_refuses_missing_tensor_wrong_dim_and_non_adapters(trained, tmp_path):
    meta, tensors = _raw(trained)
    fewer = {k: v for k, v in tensors.items() if k != "b.mean"}
    with pytest.raises(UserError, match=r"side b .*missing \['mean'\]"):
        load_adapter(_write(tmp_path / "m.safetensors", meta, fewer))
    ad = load_adapter(trained)
    with pytest.raises(UserError, match=r"side b \(encb\) takes \[n, 16\].*b\.identity\.dim = 16.*\(4, 32\)"):
        ad.b(np.zeros((4, 32), np.float32))
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="not an embedeverything adapter"):
        load_adapter(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_adapter(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="no adapter file"):
        load_adapter(tmp_path / "absent.safetensors")


# ---- pipeline: raw inputs through the real (test) encoders --------------------------------------------


def _image(path, rgb):
    Image.fromarray(np.full((12, 10, 3), rgb, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def text_image_adapter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    n = 120
    words = ["red", "green", "blue", "dark", "light", "warm", "cold", "bright"]
    texts = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    images = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(n)]
    store = Store.open(str(tmp / "s.zarr"), create=True)
    store.sync_rows(
        [
            Pair(
                id=f"p{i}", a=MediaRef(kind="text", text=texts[i]), b=MediaRef(kind="image", path=f"{i}.png")
            )
            for i in range(n)
        ]
    )
    for side, enc, items in (
        ("a", get_encoder("test-text", dim=12), texts),
        ("b", get_encoder("test-image", dim=10, seed=3), images),
    ):
        arr = store.ensure_embedding(
            f"{side}.{enc.name}-x", side=side, encoder=enc.name, options={}, dim=enc.dim, chunk_rows=64
        )
        values = enc.embed(items)
        for k in range(arr.n_chunks()):
            lo, hi = arr.chunk_bounds(k)
            arr.write_chunk(k, values[lo:hi], np.full(hi - lo, DONE, np.uint8), [""] * (hi - lo))
        arr.set_identity(enc.identity())
    res = train(str(tmp / "s.zarr"), None, None, tmp / "out", make_config(epochs=2, **FAST))
    return res.adapter_path, tmp


def test_pipeline_embeds_raw_files_and_texts(text_image_adapter, tmp_path):
    path, _ = text_image_adapter
    pipe = ee.pipeline(path)
    za = pipe.embed_a(["red green blue", "cold dark"])
    img = _image(tmp_path / "x.png", (200, 10, 30))
    zb = pipe.embed_b([img, str(img)])
    assert za.shape == (2, 256) and zb.shape == (2, 256)
    ad = load_adapter(path)
    want = ad.b(get_encoder("test-image", dim=10, seed=3).embed([np.asarray(Image.open(img).convert("RGB"))]))
    assert np.allclose(zb[0], want[0], atol=1e-5) and np.allclose(zb[0], zb[1], atol=1e-5)
    with pytest.raises(UserError, match="file not found"):
        pipe.embed_b([tmp_path / "absent.png"])


def test_pipeline_takes_videos_as_ee_query_does(text_image_adapter, tmp_path):
    """A video gives its middle frame to an image side (the rule of ``ee query``); a text side refuses it."""
    from media import SEGMENT_COLOURS, write_video

    from embedeverything.decode import decode_video_frame, media_duration

    path, _ = text_image_adapter
    pipe = ee.pipeline(path)
    video = write_video(tmp_path / "v.mp4", seconds=3.0)
    zb = pipe.embed_b([video])
    assert zb.shape == (1, 256) and zb.dtype == np.float32
    middle = decode_video_frame(video, media_duration(video)[0] / 2)
    assert np.abs(middle.reshape(-1, 3).mean(0) - SEGMENT_COLOURS[1]).max() < 40  # the second of three
    want = load_adapter(path).b(get_encoder("test-image", dim=10, seed=3).embed([middle]))
    assert np.allclose(zb, want, atol=1e-5)
    with pytest.raises(UserError, match="is video, but this needs text"):
        pipe.embed_a([video])
    with pytest.raises(UserError, match="unknown file type"):
        pipe.embed_b([tmp_path / "x.xyz"])


def test_pipeline_refuses_identity_mismatch_by_field(text_image_adapter, tmp_path):
    path, _ = text_image_adapter
    meta, tensors = _raw(path)
    cfg = json.loads(meta[META_CONFIG])
    cfg["b"]["identity"]["weights"] = "sha256:abc"
    cfg["b"]["identity"]["model_id"] = "other/model"
    with pytest.raises(
        UserError, match=r"b\.identity\.model_id: adapter 'other/model'.*b\.identity\.weights"
    ):
        ee.pipeline(_write(tmp_path / "w.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))
    cfg = json.loads(meta[META_CONFIG])
    cfg["a"]["identity"]["plugin_version"] = "0.0.1"
    soft = _write(tmp_path / "v.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = ee.pipeline(soft)
    assert any("plugin_version" in str(w.message) for w in caught)
    assert pipe.embed_a("red").shape == (1, 256)


def test_public_pipeline_stays_a_function_after_its_module_is_imported():
    """Importing a submodule sets the package attribute of its name: the module must not be ``pipeline``."""
    import subprocess
    import sys

    code = (
        "import embedeverything as ee, embedeverything.evaluate.query, embedeverything.inference;"
        "assert callable(ee.pipeline) and ee.pipeline.__name__ == 'pipeline', ee.pipeline"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
