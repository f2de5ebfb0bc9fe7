"""UMAP figures from a real store and a real adapter: three PNGs of the expected size, reproducible,
and the model card linking them. The only test module that imports umap (its numba JIT costs seconds
per process)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ee_main
from PIL import Image

from embedeverything.train import make_config, train


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """Six classes: side a clustered by class, side b a nonlinear function of a, 300 pairs."""
    from test_eval import write_store

    root = tmp_path_factory.mktemp("fig")
    rng = np.random.default_rng(0)
    n, classes = 300, 6
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, 12)) * 2.5
    A = (centres[y] + rng.standard_normal((n, 12))).astype(np.float32)
    B = np.tanh(A @ rng.standard_normal((12, 8)) / 3) + 0.1 * rng.standard_normal((n, 8))
    labels = np.array(["dog", "bell", "car", "rain", "bird", "drum"])[y]
    store = write_store(root / "s.zarr", A, B.astype(np.float32), labels)
    res = train(store, None, None, root / "run", make_config(epochs=10, checkpoint_every_s=1e9, threads=1))
    return root, store, res.adapter_path


def test_figures_are_pngs_of_the_expected_size(labelled_run):
    from embedeverything.evaluate import figures as fg

    root, _, adapter = labelled_run
    paths = fg.make_figures(adapter, root / "figs", max_points=150)
    assert [p.name for p in paths] == list(fg.FILES)
    sizes = [(int(fg.SIZE_PAIR[0] * fg.DPI), int(fg.SIZE_PAIR[1] * fg.DPI))] + [
        (int(fg.SIZE_SINGLE[0] * fg.DPI), int(fg.SIZE_SINGLE[1] * fg.DPI))
    ] * 2
    for p, size in zip(paths, sizes, strict=True):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.size == size and im.mode in ("RGBA", "RGB")
            px = np.asarray(im.convert("RGB"))
        # something was drawn: many distinct colours, not a blank canvas
        assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50
    titles = [Image.open(p).info["Title"] for p in paths]
    assert "coloured by class" in titles[0] and "colour: class" in titles[1], titles
    assert not list((root / "figs").glob("*.tmp*"))


def test_ee_figures_cli_is_reproducible_and_card_links_figures(labelled_run, capsys):
    from embedeverything.evaluate import evaluate, write_model_card
    from embedeverything.evaluate.figures import umap_2d

    root, _, adapter = labelled_run
    assert ee_main("figures", str(adapter), "--out", str(root / "cli"), "--max-points", "60") == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    assert len(printed) == 3 and all(p.endswith(".png") for p in printed)
    # progress goes to stderr: the figure being drawn, how many of the three are done
    assert "figures" in captured.err and "3/3" in captured.err, captured.err
    x = np.random.default_rng(1).standard_normal((40, 5)).astype(np.float32)
    assert np.array_equal(umap_2d(x, seed=3), umap_2d(x, seed=3))  # fixed seed, same map
    card = write_model_card(adapter, evaluate(adapter), [root / "cli" / "b_both_modalities.png"])
    text = card.read_text()
    assert "![b both modalities](../cli/b_both_modalities.png)" in text
    assert "## Encoders" in text and "| a | enca |" in text


def test_figures_without_labels(tmp_path):
    """No labels in the store: one colour for (a), markers alone tell the modalities apart in (b)."""
    from test_eval import planted, write_store

    from embedeverything.evaluate import make_figures

    A, B, _ = planted(120)
    store = write_store(tmp_path / "s.zarr", A, B)
    res = train(store, None, None, tmp_path / "run", make_config(epochs=2, checkpoint_every_s=1e9, threads=1))
    paths = make_figures(res.adapter_path, tmp_path / "figs", max_points=40, n_links=4)
    assert len(paths) == 3 and all(p.stat().st_size > 10_000 for p in paths)
    titles = [Image.open(p).info["Title"] for p in paths[:2]]
    assert all("class" not in t and "no labels" in t for t in titles), titles
