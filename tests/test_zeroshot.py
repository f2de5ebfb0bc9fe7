"""Zero-shot with words on a small labelled set built here: real files, real store, a real trained adapter.

Three in-process encoders (no weights): an image and a text encoder that declare the same shared space
(a class word and an image of that class's colour land on the same point, as CLIP's towers would), and an
audio encoder whose embedding is a fixed nonlinear function of the tone's pitch, which encodes the class.
The adapter keeps the image side as is and learns audio -> image space from pairs; the text encoder is then
found through the shared-space declaration, and labels audio it never saw paired with words.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ee_main
from media import write_image, write_tone
from pydantic import BaseModel, ConfigDict

import embedeverything as ee
from embedeverything.embed import embed_side
from embedeverything.manifest import MediaRef, Pair, write_manifest
from embedeverything.plugins import register_plugin, unregister_plugin
from embedeverything.train import make_config, train

WORDS = ["dog", "bell", "car", "rain", "bird"]
COLOURS = {
    "dog": (220, 40, 40),
    "bell": (40, 200, 40),
    "car": (40, 40, 220),
    "rain": (210, 210, 40),
    "bird": (40, 200, 210),
}
PITCH = {"dog": 300.0, "bell": 700.0, "car": 1100.0, "rain": 1500.0, "bird": 1900.0}


class ZSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = 16
    space: str = "zs-space"


def _projection(dim: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((3, dim)).astype(np.float32)


class _ZS(ee.Encoder):
    Options = ZSOptions
    loads = 0  # counted across instances: tests check an encoder is loaded once, or not at all

    @property
    def dim(self) -> int:
        return self.options.dim

    @property
    def shared_space(self) -> str | None:
        return self.options.space or None

    def load(self) -> ee.Weights:
        _ZS.loads += 1
        self.proj = _projection(self.options.dim)
        return ee.Weights(model_id=f"zs/{self.name}", weights="sha256:0")


class ZSImage(_ZS):
    name, modality = "zs-image", "image"

    def embed_batch(self, items):
        colours = np.stack([im.reshape(-1, 3).mean(0) / 255.0 - 0.5 for im in items])
        return (colours @ self.proj).astype(np.float32)


class ZSText(_ZS):
    name, modality = "zs-text", "text"

    def embed_batch(self, items):
        out = []
        for text in items:
            words = [w.strip(".,").lower() for w in text.split()]
            cols = [np.array(COLOURS[w]) / 255.0 - 0.5 for w in words if w in COLOURS]
            out.append(np.mean(cols, 0) if cols else np.zeros(3))
        return (np.stack(out) @ self.proj).astype(np.float32)


class ZSAudio(ee.Encoder):
    """Pitch -> soft one-hot over 8 bins -> tanh of a fixed random projection (a planted nonlinear map)."""

    name, modality, dim = "zs-audio", "audio", 12

    def load(self) -> ee.Weights:
        self.q = np.random.default_rng(11).standard_normal((8, self.dim)).astype(np.float32)
        return ee.Weights(model_id="zs/audio", weights="sha256:1")

    def embed_batch(self, items):
        feats = []
        for a in items:
            mono = a.samples.mean(0)
            peak = np.argmax(np.abs(np.fft.rfft(mono))) * a.sample_rate / mono.size
            centres = np.linspace(300, 1900, 8)
            feats.append(np.exp(-(((peak - centres) / 150.0) ** 2)))
        return np.tanh(2 * np.stack(feats) @ self.q).astype(np.float32)


class ZSPlugin:
    @staticmethod
    @ee.hookimpl
    def register_encoders(register):
        register(ZSImage)
        register(ZSText)
        register(ZSAudio)


@pytest.fixture(scope="module")
def zs_run(tmp_path_factory):
    """A manifest of 200 (image, tone) pairs over 5 classes, embedded, and an adapter trained on it."""
    register_plugin(ZSPlugin(), "zs-plugin")
    root = tmp_path_factory.mktemp("zs")
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(200):
        word = WORDS[i % len(WORDS)]
        colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[word])
        write_image(root / "img" / f"{i:03d}.png", colour, size=(8, 8))
        write_tone(root / "snd" / f"{i:03d}.wav", 0.25, PITCH[word] + rng.uniform(-40, 40), 8000)
        pairs.append(
            Pair(
                id=f"p{i:03d}",
                a=MediaRef(kind="image", path=f"img/{i:03d}.png"),
                b=MediaRef(kind="audio", path=f"snd/{i:03d}.wav"),
                label=word,
                group=f"g{i}",
            )
        )
    manifest = write_manifest(root / "manifest.jsonl", pairs, "image", "audio")
    store = str(root / "store.zarr")
    for side, enc in (("a", "zs-image"), ("b", "zs-audio")):
        rep = embed_side(store, str(manifest), side, enc, decode_workers=1)
        assert rep.failed == 0
    res = train(store, None, None, root / "run", make_config(epochs=25, checkpoint_every_s=0, threads=1))
    yield root, manifest, store, res.adapter_path
    unregister_plugin("zs-plugin")


def test_text_tower_is_found_by_shared_space(zs_run):
    from embedeverything.adapter import load_adapter
    from embedeverything.evaluate.zeroshot import find_text_tower

    _, _, _, adapter = zs_run
    ad = load_adapter(adapter)
    assert ad.config.a.head.kind == "identity" and ad.config.b.head.kind != "identity"
    tower = find_text_tower(ad)
    # the installed test-text also takes `space`, but the image encoder's own plugin comes first
    assert tower.encoder.name == "zs-text" and tower.side == "a"


def test_zeroshot_manifest_top1_above_chance(zs_run):
    from embedeverything.evaluate import zeroshot_manifest

    _, manifest, _, adapter = zs_run
    zs = zeroshot_manifest(adapter, manifest, part="test")
    assert zs.side == "b" and zs.labels == sorted(WORDS)
    assert len(zs.scored) > 40
    top1, top5 = zs.accuracy(1), zs.accuracy(5)
    assert top1 is not None and top1 > 0.6 > zs.chance, top1
    assert top5 == 1.0  # five labels


def test_zeroshot_store_matches_manifest(zs_run):
    from embedeverything.evaluate import zeroshot_manifest, zeroshot_store

    _, manifest, store, adapter = zs_run
    by_store = zeroshot_store(adapter, store)
    by_manifest = zeroshot_manifest(adapter, manifest, part="test")
    assert by_store.names == by_manifest.names
    assert [t[0][0] for t in by_store.top] == [t[0][0] for t in by_manifest.top]
    assert ee_main("zeroshot", "--adapter", str(adapter), "--store", store, "--part", "all") == 0
    assert ee_main("zeroshot", "--adapter", str(adapter), "--store", store, "--part", "some") == 2


def test_ee_zeroshot_files_and_manifest_cli(zs_run, tmp_path, capsys):
    root, manifest, _, adapter = zs_run
    files = [str(write_tone(tmp_path / f"{w}.wav", 0.3, PITCH[w], 8000)) for w in WORDS]
    code = ee_main("zeroshot", "--adapter", str(adapter), "--labels", ",".join(WORDS), *files)
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [ln for ln in out.splitlines() if ".wav" in ln]
    assert len(lines) == 5
    hits = sum(ln.split()[1] == Path(f).stem for ln, f in zip(lines, files, strict=True))
    assert hits >= 4, out
    # manifest mode, JSON out
    code = ee_main(
        "zeroshot",
        "--adapter",
        str(adapter),
        "--manifest",
        str(manifest),
        "--json-out",
        str(tmp_path / "z.json"),
    )
    assert code == 0
    summary = json.loads((tmp_path / "z.json").read_text())
    assert summary["top1"] > summary["chance_top1"] and summary["scored"] == 200
    assert "top-1" in capsys.readouterr().out


def test_zeroshot_user_errors(zs_run, tmp_path, capsys):
    _, _, _, adapter = zs_run
    assert ee_main("zeroshot", "--adapter", str(adapter), "--labels", "dog", str(tmp_path / "x.wav")) == 2
    assert "at least two labels" in capsys.readouterr().err
    assert ee_main("zeroshot", "--adapter", str(adapter), "--labels", "dog,car", str(tmp_path / "x.wav")) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.xyz").write_text("?")
    assert ee_main("zeroshot", "--adapter", str(adapter), "--labels", "dog,car", str(tmp_path / "x.xyz")) == 2
    assert "unknown file type" in capsys.readouterr().err
    assert (
        ee_main("zeroshot", "--adapter", str(tmp_path / "nope.safetensors"), "--labels", "a,b", "f.wav") == 2
    )
    assert "no adapter file" in capsys.readouterr().err


def test_ee_query_file_and_words(zs_run, tmp_path, capsys):
    _, _, store, adapter = zs_run
    tone = write_tone(tmp_path / "q.wav", 0.3, PITCH["car"], 8000)
    assert ee_main("query", str(adapter), str(tone), "--against", store, "--k", "5") == 0
    out = capsys.readouterr().out
    hits = [ln for ln in out.splitlines() if "label=" in ln]
    assert len(hits) == 5 and all("label=car" in ln for ln in hits), out
    assert "zs-audio (side b)" in out and "side a" in out
    # words go through the text tower that shares side a's space, and find images of that class
    assert ee_main("query", str(adapter), "bell", "--k", "3", "--json-out", str(tmp_path / "q.json")) == 0
    (res,) = json.loads((tmp_path / "q.json").read_text())
    assert res["side"] == "a" and res["gallery"] == "b"  # text lands in side a's space, searches audio
    assert [h["label"] for h in res["hits"]] == ["bell"] * 3
    capsys.readouterr()
    assert ee_main("query", str(adapter), str(tmp_path / "missing.wav"), "--against", store) == 2
    assert "no such file" in capsys.readouterr().err
    assert ee_main("query", str(adapter), str(tone), "--against", store, "--k", "0") == 2


def test_zeroshot_refuses_mixed_files_before_loading_an_encoder(zs_run, tmp_path, capsys):
    _, _, _, adapter = zs_run
    tone = write_tone(tmp_path / "a.wav", 0.3, PITCH["car"], 8000)
    image = write_image(tmp_path / "b.png", COLOURS["dog"], size=(8, 8))
    before = _ZS.loads
    assert ee_main("zeroshot", "--adapter", str(adapter), "--labels", "dog,car", str(tone), str(image)) == 2
    assert _ZS.loads == before  # refused before any encoder loaded
    err = capsys.readouterr().err
    assert f"{image} is image, but {tone} is audio" in err, err


def test_ee_query_many_loads_the_encoder_once(zs_run, tmp_path, capsys, monkeypatch):
    _, _, store, adapter = zs_run
    (tmp_path / "q.txt").write_bytes("\ufeffcar\n\nrain\n".encode())  # a BOM, a blank line
    before = _ZS.loads
    code = ee_main(
        "query", str(adapter), "bell", "dog", "--queries", str(tmp_path / "q.txt"), "--k", "2", "--json"
    )
    assert code == 0
    out = capsys.readouterr().out
    results = json.loads(out)  # stdout holds the JSON only
    assert [r["query"] for r in results] == ["bell", "dog", "car", "rain"]
    assert [[h["label"] for h in r["hits"]] for r in results] == [
        [w, w] for w in ("bell", "dog", "car", "rain")
    ]
    assert _ZS.loads == before + 1  # the text tower, once for all four
    # one result block per query on the terminal; queries from stdin
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"bird\ncar\n")))
    assert ee_main("query", str(adapter), "--queries", "-", "--against", store, "--k", "1") == 0
    out = capsys.readouterr().out
    assert out.count("query 'bird'") == 1 and out.count("query 'car'") == 1
    labels = [w for ln in out.splitlines() for w in ln.split() if w.startswith("label=")]
    assert labels == ["label=bird", "label=car"], out
    assert ee_main("query", str(adapter), "--queries", str(tmp_path / "none.txt")) == 2
    assert "--queries: no such file" in capsys.readouterr().err


def test_adapter_with_a_text_side_labels_through_its_own_head(zs_run, tmp_path):
    """The minilm case: one side is a text encoder (here test-text), so labels go through that side."""
    from embedeverything.evaluate import zeroshot_files
    from embedeverything.evaluate.zeroshot import find_text_tower

    root, _, _, _ = zs_run
    pairs = [
        Pair(
            id=f"t{i:03d}",
            a=MediaRef(kind="text", text=WORDS[i % len(WORDS)]),
            b=MediaRef(kind="audio", path=str(root / "snd" / f"{i:03d}.wav")),
            label=WORDS[i % len(WORDS)],
            group=f"g{i}",
        )
        for i in range(200)
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", pairs, "text", "audio")
    store = str(tmp_path / "s.zarr")
    embed_side(store, str(manifest), "a", "test-text", decode_workers=1)
    embed_side(store, str(manifest), "b", "zs-audio", decode_workers=1)
    res = train(
        store, None, None, tmp_path / "run", make_config(epochs=25, checkpoint_every_s=1e9, threads=1)
    )
    from embedeverything.adapter import load_adapter

    tower = find_text_tower(load_adapter(res.adapter_path))
    assert tower.side == "a" and tower.encoder.name == "test-text"
    files = [write_tone(tmp_path / f"{w}.wav", 0.3, PITCH[w], 8000) for w in WORDS]
    zs = zeroshot_files(res.adapter_path, files, WORDS)
    assert zs.side == "b" and "side a is text" in zs.tower
    right = sum(top[0][0] == w for top, w in zip(zs.top, WORDS, strict=True))
    assert right >= 3, zs.top  # chance: 1 of 5


def test_ee_eval_zeroshot_goes_into_report_and_card(zs_run, tmp_path, capsys):
    _, _, _, adapter = zs_run
    out = tmp_path / "r.json"
    assert ee_main("eval", str(adapter), "--zeroshot", "--no-baselines", "--json-out", str(out)) == 0
    assert "zero-shot (zs-text shares zs-image's space" in capsys.readouterr().out
    z = json.loads(out.read_text())["zeroshot"]
    assert z["top1"] > z["chance_top1"] and z["n_labels"] == 5 and z["side"] == "b"
    card = (Path(adapter).parent / "README.md").read_text()
    assert "## Zero-shot with text" in card and "5 labels: top-1" in card


def test_pipeline_embeds_words_through_the_text_tower_as_ee_query_does(zs_run, tmp_path):
    """The public pipeline and ``ee query`` give words the same point: the text tower of side a's space
    (an image side here, as with CLIP); audio files go through side b as ``ee query`` sends them."""
    from embedeverything.adapter import load_adapter
    from embedeverything.evaluate.query import embed_queries

    _, _, _, adapter = zs_run
    pipe = ee.pipeline(adapter)
    z = pipe.embed_text(["bell", "a photo of a car"])
    assert z.shape == (2, load_adapter(adapter).config.shared_dim) and z.dtype == np.float32
    assert pipe.text_tower.encoder.name == "zs-text" and pipe.text_tower.side == "a"
    for word, row in (("bell", z[0]), ("a photo of a car", z[1])):
        want, side, _ = embed_queries(load_adapter(adapter), [word])[0]
        assert side == "a" and np.allclose(row, want, atol=1e-6)
    assert np.allclose(pipe.embed_text("bell"), z[:1], atol=1e-6)
    tone = write_tone(tmp_path / "q.wav", 0.3, PITCH["car"], 8000)
    want, side, _ = embed_queries(load_adapter(adapter), [str(tone)])[0]
    assert side == "b" and np.allclose(pipe.embed_b([tone]), want, atol=1e-6)
    with pytest.raises(ee.UserError, match="for words use embed_text"):
        pipe.embed_a(["a red circle"])
