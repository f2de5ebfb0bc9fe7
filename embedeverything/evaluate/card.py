"""The model card: a README.md next to the adapter, saying what it is, what it was trained on, how well it
does against the baselines, and what its space looks like. Everything in it comes from the adapter's own
config and an :class:`EvalReport`, so it can be regenerated at any time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..adapter import AdapterConfig, load_adapter
from ..files import write_text_atomic
from .data import EvalData
from .report import EvalReport, MethodResult

CARD_FILE = "README.md"
SETTINGS_SHOWN = (
    "preset",
    "loss",
    "optimizer",
    "lr",
    "weight_decay",
    "batch_size",
    "dim",
    "epochs",
    "patience",
    "seed",
    "fractions",
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def write_model_card(
    adapter_path: str | os.PathLike[str] | EvalData,
    report: EvalReport | None = None,
    figures: Sequence[str | os.PathLike[str]] = (),
    zeroshot: dict[str, Any] | None = None,
) -> Path:
    """Write ``README.md`` beside the adapter (replacing it); returns its path.

    ``adapter_path`` may be an open :class:`EvalData`, whose adapter is then used as loaded.
    """
    if isinstance(adapter_path, EvalData):
        path, c = adapter_path.adapter_path, adapter_path.adapter.config
    else:
        path = Path(adapter_path)
        c = load_adapter(path).config
    lines = _intro(path, c) + _encoders(c) + _data_and_training(c)
    if report is not None:
        lines += _retrieval(report)
    if zeroshot:
        lines += _zeroshot(zeroshot)
    if figures:
        lines += _figures(figures, path.parent)
    card = path.parent / CARD_FILE
    write_text_atomic(card, "\n".join(lines).rstrip() + "\n")
    return card


def _intro(path: Path, c: AdapterConfig) -> list[str]:
    return [
        f"# Adapter: {c.a.identity.name} + {c.b.identity.name}",
        "",
        f"`{path.name}` maps {c.a.identity.modality} ({c.a.identity.name}) and {c.b.identity.modality} "
        f"({c.b.identity.name}) embeddings into one {c.shared_dim}-d space where a pair lands close by cosine. "
        f"Made with embedeverything {c.training.ee_version}: the encoders stay frozen, only the heads below "
        "were trained.",
        "",
        "```python",
        "from embedeverything import load_adapter",
        f'ad = load_adapter("{path.name}")',
        f"z_a = ad.a(emb_a)  # [n, {c.a.identity.dim}] {c.a.identity.name} embeddings -> [n, {c.shared_dim}]",
        f"z_b = ad.b(emb_b)  # [n, {c.b.identity.dim}] {c.b.identity.name} embeddings -> [n, {c.shared_dim}]",
        "```",
    ]


def _encoders(c: AdapterConfig) -> list[str]:
    lines = [
        "",
        "## Encoders",
        "",
        "| side | encoder | modality | dim | model | weights | plugin | head |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in ("a", "b"):
        sc = getattr(c, s)
        i = sc.identity
        head = (
            sc.head.kind
            + (
                f" (width {sc.head.width or max(sc.head.in_dim, sc.head.out_dim)}, depth {sc.head.depth})"
                if sc.head.kind == "mlp"
                else ""
            )
            + (
                f" + anchor part ({sc.head.anchors.count} anchors, weight {sc.head.anchors.weight:g})"
                if sc.head.anchors is not None
                else ""
            )
        )
        weights = i.weights if len(i.weights) < 24 else i.weights[:23] + "…"
        lines.append(
            f"| {s} | {i.name} | {i.modality} | {i.dim} | {i.model_id} | `{weights}` | {i.plugin} {i.plugin_version} | {head} |"
        )
    if "random-init" in (c.a.identity.weights, c.b.identity.weights):
        lines += [
            "",
            "**Warning: trained on embeddings of RANDOMLY initialised encoder weights; a demo only.**",
        ]
    return lines


def _data_and_training(c: AdapterConfig) -> list[str]:
    t = c.training
    counts = t.split.get("counts", {})
    lines = [
        "",
        "## Data",
        "",
        f"- store: `{t.store}`",
        f"- split ({t.split.get('source', '?')}, seed {t.split.get('seed', '?')}, grouped by source): "
        + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"- training rows: {t.rows} (ids sha256 `{t.row_ids_sha256[:19]}…`)",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(t.settings[k])} |" for k in SETTINGS_SHOWN if k in t.settings]
    lines += [
        f"| epochs run | {t.epochs_run} (best {t.best_epoch}{', stopped early' if t.stopped_early else ''}) |",
        f"| learned by the loss | {', '.join(f'{k} {_fmt(v)}' for k, v in c.loss.learned.items()) or '-'} |",
    ]
    if t.refit_epochs is not None:
        lines.append(f"| refit | from scratch on train + val for {t.refit_epochs} epochs ({t.rows} rows) |")
    if t.anchors is not None:
        an = t.anchors
        chosen = (
            f"{an['count']} anchors, k {an['k']}, p {_fmt(an['power'])}, weight {_fmt(an['weight'])}"
            if an.get("weight")
            else "none"
        )
        lines.append(
            f"| anchor part (chosen on val) | {chosen}: val R@1 {_fmt(an['val_r1'])} "
            f"(heads alone {_fmt(an['val_r1_heads_alone'])}) |"
        )
    if t.train_seconds is not None:
        lines.append(f"| training time | {t.train_seconds:.1f} s |")
    return lines


def _retrieval(report: EvalReport) -> list[str]:
    shown = (
        "modality_gap",
        "alignment",
        "uniformity_a",
        "uniformity_b",
        "hubness_a2b_skewness",
        "hubness_b2a_skewness",
    )
    lines = [
        "",
        "## Retrieval on the test rows",
        "",
        f"{report.test_rows_used} test pairs that neither training nor model selection saw; chance R@1 "
        f"{report.chance_r1:.4f}. Baselines are fitted on the same train rows, tuned on the same validation "
        "rows. MedR: median rank of the true pair. With labels: class-level mAP and the share of queries "
        "with an item of their class among the first K (class R@K).",
        "",
        report.markdown(),
        "",
        "Diagnostics of the shared space (test rows): "
        + ", ".join(
            f"{k.replace('_', ' ')} {report.diagnostics[k]:.3g}" for k in shown if k in report.diagnostics
        )
        + ".",
    ]
    return lines + _baseline_won(report) + [f"- note: {n}" for n in report.notes]


def _baseline_won(report: EvalReport) -> list[str]:
    """The advice a user needs when a training-free baseline did at least as well as the adapter here."""

    def mean_r1(m: MethodResult) -> float:
        return (m.metrics["a2b_r1"] + m.metrics["b2a_r1"]) / 2

    adapter = report.methods[0]
    best = max((m for m in report.methods if m.kind == "baseline"), key=mean_r1, default=None)
    if best is None or mean_r1(best) < mean_r1(adapter):
        return []
    return [
        "",
        f"**Prefer the `{best.name}` baseline for this data**: on these test rows it did at least as well as "
        f"the adapter (mean R@1 both ways {mean_r1(best):.4f} against {mean_r1(adapter):.4f}); see when a "
        "baseline is the better choice in embedeverything's docs/evaluation.md.",
    ]


def _zeroshot(zeroshot: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Zero-shot with text",
        "",
        f"Text tower: {zeroshot.get('text_tower')}; {zeroshot.get('scored', 0)} items of side {zeroshot.get('side')}, "
        f"{zeroshot.get('n_labels', len(zeroshot.get('labels', [])))} labels: top-1 {_fmt(zeroshot.get('top1'))} "
        f"(chance {_fmt(zeroshot.get('chance_top1'))}), top-5 {_fmt(zeroshot.get('top5'))}.",
    ]


def _figures(figures: Sequence[str | os.PathLike[str]], base: Path) -> list[str]:
    """Image links relative to the card, so that the folder can move as a whole."""
    lines = ["", "## Figures", ""]
    for f in figures:
        fp = Path(f)
        try:
            rel = os.path.relpath(fp, base)
        except ValueError:
            rel = str(fp)
        lines += [f"![{fp.stem.replace('_', ' ')}]({Path(rel).as_posix()})", ""]
    return lines
