"""Figures like the paper's (Figures 2-4), drawn from the store and an adapter with UMAP.

(a) one modality coloured by class, before and after its head; (b) both modalities in one map, marker
shape for the modality and colour for the class; (c) a handful of training pairs, each linked by a line.
(a) and (b) use the test rows, (c) the train rows, each subsampled to ``max_points`` per modality with
a fixed seed. UMAP runs with a fixed ``random_state`` (which makes it single-threaded, and reproducible),
on cosine distance, as the heads are trained for. Drawn with matplotlib's object API on the Agg canvas:
no pyplot, no global state, no display needed. A title promises colour by class only where there are
labels; each PNG carries its title in its ``Title`` metadata as well.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..files import atomic_path
from .data import AdapterSource, EvalData, eval_data, load_split_rows

DPI = 100
SIZE_PAIR = (14.0, 6.5)  # inches: (a), two panels -> 1400 x 650 px
SIZE_SINGLE = (10.0, 8.0)  # (b) and (c) -> 1000 x 800 px
MAX_CLASSES = 20
MARKERS = {"a": "o", "b": "^"}
FILES = ("a_before_after.png", "b_both_modalities.png", "c_training_pairs.png")


def _require() -> tuple[Any, Any]:
    try:
        import umap  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError(
            f"figures need umap-learn and matplotlib ({e}): pip install 'embedeverything[eval]'"
        ) from None
    return Figure, FigureCanvasAgg


def umap_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[n, 2]``: UMAP of the rows of ``x`` on cosine distance, reproducible for a given seed."""
    import umap

    n = x.shape[0]
    if n < 4:
        raise UserError(f"a UMAP figure needs at least 4 points, got {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP's notes on n_jobs with a seed, and on tiny graphs
        reducer = umap.UMAP(
            n_neighbors=min(15, n - 1),
            min_dist=0.1,
            metric="cosine",
            random_state=seed,
            n_jobs=1,
            init="spectral" if n > 50 else "random",
        )
        return np.asarray(reducer.fit_transform(np.asarray(x, np.float64)), dtype=np.float32)


class _Classes:
    """Class colours: the most frequent classes get a colour each, the rest share grey ("other")."""

    def __init__(self, codes: np.ndarray | None, names: list[str] | None):
        self.codes, self.names = codes, names or []
        self.shown: list[int] = []
        if codes is not None and (codes >= 0).any():
            counts = Counter(int(c) for c in codes if c >= 0)
            self.shown = [c for c, _ in counts.most_common(MAX_CLASSES)]
        from matplotlib import colormaps

        cmap = colormaps["tab10" if len(self.shown) <= 10 else "tab20"]
        self.colour = {c: cmap(i % cmap.N) for i, c in enumerate(self.shown)}

    @property
    def any(self) -> bool:
        return bool(self.shown)

    def groups(self, codes: np.ndarray) -> list[tuple[str, Any, np.ndarray]]:
        """(legend label, colour, mask) per shown class, then "other" / "no label"."""
        out = [(self.names[c], self.colour[c], codes == c) for c in self.shown]
        rest = ~np.isin(codes, self.shown)
        if rest.any():
            out.append(("other" if (codes[rest] >= 0).any() else "no label", (0.6, 0.6, 0.6, 1.0), rest))
        return out


def _scatter_classes(
    ax: Any, xy: np.ndarray, codes: np.ndarray, classes: _Classes, marker: str = "o", size: float = 10
) -> None:
    for label, colour, mask in classes.groups(codes):
        ax.scatter(
            xy[mask, 0], xy[mask, 1], s=size, c=[colour], marker=marker, label=label, alpha=0.8, linewidths=0
        )


def _tidy(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")


def _subsample(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    if rows.size <= k:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))


def _project(data: EvalData, side: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(getattr(data.adapter, side)(torch.from_numpy(x)).float(), dim=-1).numpy()


def _names(data: EvalData) -> dict[str, str]:
    cfg = data.adapter.config
    return {s: f"{getattr(cfg, s).identity.name} ({getattr(cfg, s).identity.modality})" for s in "ab"}


def make_figures(
    adapter_path: AdapterSource,
    out_dir: str | os.PathLike[str],
    store_location: str | None = None,
    split_path: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    max_points: int = 2000,
    n_links: int = 10,
    side: str | None = None,
    on_step: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Write figures (a), (b), (c) as PNGs into ``out_dir``; returns their paths.

    ``side`` picks the modality of (a); by default the side with a trained head (b when both have one).
    ``adapter_path`` may be an open :class:`EvalData` (``ee pair`` draws from the one it evaluated).
    ``on_step(done, total, what)`` is called before each figure and once at the end: each takes seconds
    (the first pays numba's JIT), so a caller can show where it is.
    """
    Figure, FigureCanvasAgg = _require()
    data = eval_data(adapter_path, store_location)
    shown_rows, train_rows, part = _figure_rows(data, split_path)
    cfg = data.adapter.config
    if side is None:
        side = "b" if cfg.b.head.kind != "identity" else "a"
    if side not in ("a", "b"):
        raise UserError(f"--side must be a or b, not {side!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    codes = data.labels.codes if data.labels is not None else np.full(len(data.meta["id"]), -1)
    classes = _Classes(codes[shown_rows], data.labels.names if data.labels else None)
    plot = _Plot(data, Figure, FigureCanvasAgg, codes, classes, _names(data), seed)
    rows = _subsample(shown_rows, max_points, seed)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("before and after the head", lambda: plot.before_after(rows, side, part)),
        ("both modalities", lambda: plot.both_modalities(rows, part)),
        (
            "training pairs",
            lambda: plot.training_pairs(_subsample(train_rows, max_points, seed + 1), n_links),
        ),
    ]
    paths = []
    for i, ((what, draw), name) in enumerate(zip(steps, FILES, strict=True)):
        if on_step is not None:
            on_step(i, len(steps), f"{name}: {what}")
        paths.append(_save(draw(), out / name))
    if on_step is not None:
        on_step(len(steps), len(steps), "done")
    return paths


def _figure_rows(
    data: EvalData, split_path: str | os.PathLike[str] | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(rows shown in (a) and (b), rows of (c), the name of the part shown): the split's test and train
    parts, or every usable row when there is no split to read (or too few test rows to draw)."""
    try:
        split = load_split_rows(data, split_path)
        shown_rows, train_rows = split.test, split.train
        part = "test"
    except UserError:
        if split_path is not None:
            raise
        shown_rows = train_rows = data.usable
        part = "all"
    if shown_rows.size < 8:
        shown_rows, part = data.usable, "all"
    return shown_rows, train_rows, part


@dataclass
class _Plot:
    """What the three figures share: the data, the canvas classes, class colours, side names, the seed."""

    data: EvalData
    Figure: Any
    Canvas: Any
    codes: np.ndarray  # class code per store row, -1 for none
    classes: _Classes
    names: dict[str, str]
    seed: int

    def figure(self, size: tuple[float, float]) -> Any:
        fig = self.Figure(figsize=size, dpi=DPI)
        self.Canvas(fig)
        return fig

    def both_sides(self, rows: np.ndarray) -> np.ndarray:
        """UMAP of side a's projected rows followed by side b's."""
        za = _project(self.data, "a", self.data.arrays["a"].read(rows))
        zb = _project(self.data, "b", self.data.arrays["b"].read(rows))
        return umap_2d(np.concatenate([za, zb]), self.seed)

    def before_after(self, rows: np.ndarray, side: str, part: str) -> Any:
        """(a) one modality, before and after its head."""
        cfg = self.data.adapter.config
        raw = self.data.arrays[side].read(rows)
        before, after = umap_2d(raw, self.seed), umap_2d(_project(self.data, side, raw), self.seed)
        fig = self.figure(SIZE_PAIR)
        sc = getattr(cfg, side)
        for k, (xy, title) in enumerate(
            (
                (before, f"before: {sc.identity.name} embeddings ({sc.identity.dim}-d)"),
                (after, f"after: {sc.head.kind} head into the shared space ({cfg.shared_dim}-d)"),
            )
        ):
            ax = fig.add_subplot(1, 2, k + 1)
            _scatter_classes(ax, xy, self.codes[rows], self.classes)
            _tidy(ax, title)
        _legend(fig, self.classes)
        how = "coloured by class" if self.classes.any else "(no labels: one colour)"
        fig.suptitle(f"(a) {self.names[side]} {how}, {rows.size} {part} rows", fontsize=14)
        fig.subplots_adjust(left=0.03, right=0.86, top=0.88, bottom=0.06, wspace=0.08)
        return fig

    def both_modalities(self, rows: np.ndarray, part: str) -> Any:
        """(b) both modalities in one map."""
        fig = self.figure(SIZE_SINGLE)
        ax = fig.add_subplot(1, 1, 1)
        xy = self.both_sides(rows)
        n = rows.size
        for s, sl in (("a", slice(0, n)), ("b", slice(n, 2 * n))):
            if self.classes.any:
                _scatter_classes(ax, xy[sl], self.codes[rows], self.classes, MARKERS[s], 14)
            else:
                ax.scatter(xy[sl, 0], xy[sl, 1], s=14, marker=MARKERS[s], alpha=0.8, linewidths=0)
        _legend(fig, self.classes, modalities=self.names)
        key = "shape: modality, colour: class" if self.classes.any else "shape: modality (no labels)"
        _tidy(ax, f"(b) both modalities in the shared space, {n} {part} pairs\n{key}")
        fig.subplots_adjust(left=0.05, right=0.78, top=0.9, bottom=0.05)
        return fig

    def training_pairs(self, rows: np.ndarray, n_links: int) -> Any:
        """(c) a handful of training pairs, linked, over all of ``rows`` in grey."""
        xy = self.both_sides(rows)
        n = rows.size
        fig = self.figure(SIZE_SINGLE)
        ax = fig.add_subplot(1, 1, 1)
        for s, sl in (("a", slice(0, n)), ("b", slice(n, 2 * n))):
            ax.scatter(
                xy[sl, 0],
                xy[sl, 1],
                s=14,
                marker=MARKERS[s],
                c=[(0.6, 0.6, 0.6, 0.6)],
                linewidths=0,
                label=self.names[s],
            )
        pick = np.random.default_rng(self.seed).choice(n, min(n_links, n), replace=False)
        _link_pairs(ax, xy, n, pick, n_links)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, markerscale=2, frameon=False)
        _tidy(
            ax,
            f"(c) {len(pick)} training pairs linked, over {n} training pairs in grey\n"
            f"circles: {self.names['a']}, triangles: {self.names['b']}",
        )
        fig.subplots_adjust(left=0.05, right=0.75, top=0.9, bottom=0.05)
        return fig


def _link_pairs(ax: Any, xy: np.ndarray, n: int, pick: np.ndarray, n_links: int) -> None:
    """Pair ``i`` (points ``i`` and ``n + i``) drawn in a colour of its own and joined by a line."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n_links <= 10 else "tab20"]
    for j, i in enumerate(pick):
        colour = cmap(j % cmap.N)
        pa, pb = xy[i], xy[n + i]
        ax.plot([pa[0], pb[0]], [pa[1], pb[1]], color=colour, linewidth=1.5)
        for s, p, size in (("a", pa, 60), ("b", pb, 70)):
            ax.scatter(
                [p[0]],
                [p[1]],
                s=size,
                marker=MARKERS[s],
                c=[colour],
                edgecolors="black",
                linewidths=0.6,
                zorder=3,
            )


def _legend(fig: Any, classes: _Classes, modalities: dict[str, str] | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = []
    if classes.any:
        handles += [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color=classes.colour[c],
                markersize=8,
                label=classes.names[c],
            )
            for c in classes.shown
        ]
    if modalities:
        handles += [
            Line2D([], [], marker=MARKERS[s], linestyle="", color="black", markersize=8, label=name)
            for s, name in modalities.items()
        ]
    if handles:
        fig.legend(
            handles=handles,
            loc="center right",
            bbox_to_anchor=(0.995, 0.5),
            fontsize=10,
            frameon=False,
            title="class" if classes.any else None,
        )


def _save(fig: Any, path: Path) -> Path:
    title = fig.get_suptitle() or fig.axes[0].get_title()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=DPI, metadata={"Title": title.replace("\n", "; ")})
    return path
