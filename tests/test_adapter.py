"""Adapters: round trip, every refusal (by field name), and the pipeline from raw files to the space."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

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
    anchors = cfg.a.head.anchors  # chosen on validation (or not) by the default settings
    assert cfg.format_version == FORMAT_VERSION and cfg.b.head.anchors == anchors
    assert cfg.training.settings["dim"] == 1024  # the default's dim for a few hundred pairs
    assert cfg.shared_dim == cfg.a.head.output_dim == 1024 + (anchors.count if anchors else 0)
    assert cfg.a.identity.name == "enca" and cfg.b.identity.dim == 16
    assert cfg.a.head.kind == "mlp" and cfg.loss.name == "clip" and "logit_scale" in cfg.loss.learned
    assert cfg.training.rows > 0 and cfg.training.row_ids_sha256.startswith("sha256:")
    assert cfg.training.split["seed"] == 0 and "val_r1" in cfg.metrics
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    za = ad.a(x)
    assert isinstance(za, np.ndarray) and za.shape == (5, cfg.shared_dim)
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
    ad = load_adapter(path)
    assert za.shape == (2, ad.config.shared_dim) and zb.shape == (2, ad.config.shared_dim)
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
    assert zb.shape == (1, load_adapter(path).config.shared_dim) and zb.dtype == np.float32
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
    assert pipe.embed_a("red").shape == (1, load_adapter(path).config.shared_dim)


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


# ---- the anchor part (format_version 2) ------------------------------------------------------------


def _anchor_heads(w: float = 0.3, k: int | None = None, p: float | None = None):
    """Linear heads with an anchor part whose anchors are 200 random pairs, and the ASIF baseline
    fitted on the same pairs (its k and p, unless given)."""
    from embedeverything.evaluate.baselines import fit_asif
    from embedeverything.heads import AnchorSpec, Head, HeadSpec, with_anchors

    rng = np.random.default_rng(0)
    ta, tb = rng.standard_normal((200, 24)) * 2 + 3, rng.standard_normal((200, 12)) - 1
    va, vb = rng.standard_normal((50, 24)) * 2 + 3, rng.standard_normal((50, 12)) - 1
    ta, tb, va, vb = (x.astype(np.float32) for x in (ta, tb, va, vb))
    fitted = fit_asif(ta, tb, va, vb)
    k, p = k or fitted.params["k"], p or fitted.params["p"]
    spec = AnchorSpec(count=200, k=k, power=p, weight=w)
    torch.manual_seed(0)
    heads = []
    for x in (ta, tb):
        head = Head(HeadSpec(kind="linear", in_dim=x.shape[1], out_dim=8))
        mean = torch.from_numpy(x.astype(np.float64).mean(0)).float()
        head.set_normalization(mean, torch.from_numpy(x.std(0)))
        anchors = torch.nn.functional.normalize(torch.from_numpy(x) - mean, dim=-1)
        heads.append(with_anchors(head, spec, mean, anchors))
    return heads, fitted, (va, vb)


def test_anchor_part_is_the_asif_baselines_relative_representation():
    """Same anchors, same k and p: the head's relative part equals ``fit_asif``'s embedding within 1e-5
    (the baseline centres in float64, the head in float32; both normalise and rank in float32)."""
    (ha, hb), fitted, (va, vb) = _anchor_heads()
    want_a, want_b = fitted.embed(va, vb)
    with torch.no_grad():
        got_a, got_b = ha.relative(torch.from_numpy(va)), hb.relative(torch.from_numpy(vb))
        out_a = ha(torch.from_numpy(va))
    assert got_a.shape == (50, 200) and (got_a > 0).sum(1).max() <= fitted.params["k"]
    assert torch.allclose(got_a, want_a, atol=1e-5) and torch.allclose(got_b, want_b, atol=1e-5)
    assert torch.allclose(out_a[:, 8:], np.sqrt(0.3) * want_a, atol=1e-5)  # the fused output's tail


@pytest.mark.parametrize(("w", "k", "p"), [(0.3, None, None), (0.9, 16, 8.0), (0.1, 200, 1.0)])
def test_fused_dot_product_is_the_weighted_sum(w, k, p):
    """out_a . out_b = (1 - w) cos(h_a, h_b) + w rel_a . rel_b, and each output has unit norm (1e-5)."""
    (ha, hb), _, (va, vb) = _anchor_heads(w, k, p)
    xa, xb = torch.from_numpy(va), torch.from_numpy(vb)
    with torch.no_grad():
        out_a, out_b = ha(xa), hb(xb)
        la, lb = ha.net(ha.standardize(xa)), hb.net(hb.standardize(xb))
        cos = torch.nn.functional.normalize(la, dim=-1) @ torch.nn.functional.normalize(lb, dim=-1).T
        rel = ha.relative(xa) @ hb.relative(xb).T
    assert out_a.shape == (50, 8 + 200) and ha.spec.output_dim == 208
    assert torch.allclose(out_a @ out_b.T, (1 - w) * cos + w * rel, atol=1e-5)
    assert torch.allclose(out_a.norm(dim=1), torch.ones(50), atol=1e-5)
    assert torch.allclose(ha(xa[3]).detach(), out_a[3], atol=1e-6)  # one vector, as AdapterSide takes it


def _anchor_adapter(tmp_path, trained):
    """The trained adapter's config with both heads replaced by anchored ones (24/12-d inputs)."""
    from embedeverything.adapter import save_adapter

    (ha, hb), _, _ = _anchor_heads()
    cfg = read_adapter_file(trained)[0]
    update = {}
    for side, head in (("a", ha), ("b", hb)):
        ident = getattr(cfg, side).identity.model_copy(update={"dim": head.spec.in_dim})
        update[side] = getattr(cfg, side).model_copy(update={"identity": ident, "head": head.spec})
    cfg = cfg.model_copy(update={**update, "shared_dim": ha.spec.output_dim})
    return save_adapter(tmp_path / "anchored.safetensors", cfg, ha, hb), (ha, hb)


def test_anchor_adapter_round_trip_is_bitwise(trained, tmp_path):
    path, (ha, hb) = _anchor_adapter(tmp_path, trained)
    ad = load_adapter(path)
    assert ad.config.shared_dim == 208 and ad.config.a.head.anchors.count == 200
    _, tensors = read_adapter_file(path)
    assert {"a.anchors", "a.anchor_mean", "b.anchors", "b.anchor_mean"} <= set(tensors)
    for side, head in (("a", ad.a.head), ("b", ad.b.head)):
        mine = ha if side == "a" else hb
        for k, v in mine.state_dict().items():
            assert torch.equal(head.state_dict()[k], v), k
    x = np.random.default_rng(1).standard_normal((7, 24)).astype(np.float32)
    with torch.no_grad():
        assert np.array_equal(ad.a(x), ha(torch.from_numpy(x)).numpy())
    from embedeverything.adapter import save_adapter

    again = save_adapter(tmp_path / "again.safetensors", ad.config, ad.a.head, ad.b.head)
    c2, t2 = read_adapter_file(again)
    assert c2 == ad.config and all(torch.equal(tensors[k], t2[k]) for k in tensors)


def test_anchor_parts_must_agree_and_fit_shared_dim(trained, tmp_path):
    path, _ = _anchor_adapter(tmp_path, trained)
    meta, tensors = _raw(path)
    cfg = json.loads(meta[META_CONFIG])
    cfg["b"]["head"]["anchors"]["weight"] = 0.5
    with pytest.raises(UserError, match=r"a\.head\.anchors .* != b\.head\.anchors"):
        load_adapter(_write(tmp_path / "w.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))
    cfg = json.loads(meta[META_CONFIG])
    cfg["shared_dim"] = 8
    with pytest.raises(
        UserError, match=r"a\.head\.out_dim \(8\) \+ a\.head\.anchors\.count \(200\) != shared_dim"
    ):
        load_adapter(_write(tmp_path / "d.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))
    fewer = {k: v for k, v in tensors.items() if k != "b.anchors"}
    with pytest.raises(UserError, match=r"side b .*missing \['anchors'\]"):
        load_adapter(_write(tmp_path / "m.safetensors", meta, fewer))
    cfg = json.loads(meta[META_CONFIG])
    cfg["a"]["head"].update(kind="identity", out_dim=24)
    with pytest.raises(UserError, match=r"a\.head: .*an identity head has no anchor part"):
        load_adapter(_write(tmp_path / "i.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors))


def test_reads_format_version_1(tmp_path):
    """A file as version 1 wrote it (no anchors, no refit fields) loads, migrated to the current version."""
    make_store(tmp_path / "s.zarr", n=200)
    cfg1 = make_config(epochs=2, refit=False, anchors="off", **FAST)
    res = train(str(tmp_path / "s.zarr"), None, None, tmp_path / "out", cfg1)
    meta, tensors = _raw(res.adapter_path)
    cfg = json.loads(meta[META_CONFIG])
    cfg["format_version"] = 1
    for side in ("a", "b"):
        del cfg[side]["head"]["anchors"]
    for field in ("refit_epochs", "anchors"):
        del cfg["training"][field]
    v1 = _write(tmp_path / "v1.safetensors", {**meta, META_CONFIG: json.dumps(cfg)}, tensors)
    ad = load_adapter(v1)
    assert ad.config.format_version == FORMAT_VERSION == 3
    assert ad.config.a.head.anchors is None and ad.config.training.refit_epochs is None
    x = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    assert np.array_equal(ad.a(x), load_adapter(res.adapter_path).a(x))


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda t: t["a.std"].zero_(), "a.std holds values <= 0"),
        (lambda t: t["b.std"].__setitem__(0, -1.0), "b.std holds values <= 0"),
    ],
    ids=["zero-std", "negative-std"],
)
def test_refuses_a_std_that_gives_non_finite_output_even_with_the_hash_recomputed(
    trained, tmp_path, edit, said
):
    meta, tensors = _raw(trained)
    tensors = {k: v.clone() for k, v in tensors.items()}
    edit(tensors)
    bad = _write(tmp_path / "bad.safetensors", meta, tensors)  # hash recomputed: the integrity check passes
    with pytest.raises(UserError, match=said):
        load_adapter(bad)


def test_the_store_is_found_from_any_folder_and_after_a_move(tmp_path, monkeypatch):
    """Trained with a relative --store in one folder; used from another folder, and after the adapter's
    folder and the store moved together, without naming the store."""
    import shutil

    from embedeverything.evaluate.data import resolve_store_location

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    make_store(work / "data" / "s.zarr", n=60)
    monkeypatch.chdir(work)
    res = train(
        "data/s.zarr", None, None, "runs/r1", make_config(epochs=1, refit=False, anchors="off", **FAST)
    )
    info = load_adapter(res.adapter_path).config.training
    assert info.store == "../../data/s.zarr" and info.store_absolute == str(work / "data" / "s.zarr")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    adapter = work / "runs" / "r1" / "adapter.safetensors"
    assert resolve_store_location(adapter, load_adapter(adapter), None) == str(work / "data" / "s.zarr")
    moved = shutil.move(str(work), str(tmp_path / "moved"))  # adapter and store together
    adapter = tmp_path / "moved" / "runs" / "r1" / "adapter.safetensors"
    found = resolve_store_location(adapter, load_adapter(adapter), None)
    assert Path(found).resolve() == (Path(moved) / "data" / "s.zarr").resolve()
