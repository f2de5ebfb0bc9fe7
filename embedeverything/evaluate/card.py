"""The model card: a README.md next to the adapter, saying what it is, what it is for and not, what it was
trained on, how well it does against the baselines, and what its space looks like. Everything in it comes
from the adapter's own config, an :class:`EvalReport` and what the user states (a license, dataset ids), so
it can be regenerated at any time.

It opens with the metadata the Hugging Face Hub reads (YAML between ``---`` lines; see
:func:`~.card_meta.card_metadata`), so that the folder can be pushed to the Hub as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..adapter import AdapterConfig, load_adapter
from ..files import write_text_atomic
from .card_meta import card_metadata, front_matter
from .data import EvalData
from .report import EvalReport, MethodResult

CARD_FILE = "README.md"
#: Raised when what the card says changes, so that ``ee pair`` writes the card of a kept run again.
CARD_VERSION = 2
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
    *,
    license: str | None = None,
    datasets: Sequence[str] = (),
) -> Path:
    """Write ``README.md`` beside the adapter (replacing it); returns its path.

    ``adapter_path`` may be an open :class:`EvalData`, whose adapter is then used as loaded. ``license``
    (a Hub license id such as ``apache-2.0``) and ``datasets`` (Hub dataset ids) go into the metadata only
    when given: nothing in a run says under which terms its data and adapter may be shared.
    """
    if isinstance(adapter_path, EvalData):
        path, c = adapter_path.adapter_path, adapter_path.adapter.config
    else:
        path = Path(adapter_path)
        c = load_adapter(path).config
    meta = card_metadata(c, report, license=license, datasets=datasets)
    lines = front_matter(meta) + _intro(path, c) + _intended_use(c) + _limitations(c, report)
    lines += _encoders(c) + _data_and_training(c)
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


def _intended_use(c: AdapterConfig) -> list[str]:
    a, b = c.a.identity, c.b.identity
    return [
        "",
        "## Intended use",
        "",
        f"Retrieval and similarity between {a.modality} and {b.modality}: given a query of one, find the items "
        "of the other that go with it, or score how well two items go together, by the cosine of their "
        f"projections. Embed each side with the encoder and options named under Encoders ({a.name}, "
        f"{b.name}): `embedeverything.pipeline` loads them from this file and checks them. It is meant for data "
        "like the pairs it was trained on; on another kind of data, measure it first (`ee eval` on a store of "
        "such pairs).",
    ]


def _limitations(c: AdapterConfig, report: EvalReport | None) -> list[str]:
    t = c.training
    lines = [
        "",
        "## Limitations",
        "",
        f"- Trained on {t.rows} pairs: it knows what those pairs show and little else.",
        "- It inherits the biases and blind spots of both frozen encoders and of its training pairs; nothing "
        "here measures them.",
    ]
    if report is None:
        lines.append("- No test figures in this card: `ee eval` on the adapter measures it.")
    else:
        lines.append(
            f"- Every figure below comes from {report.test_rows_used} test rows split from the same data as the "
            "training rows, not from an independent benchmark: expect less on data unlike it."
        )
        best = _winning_baseline(report)
        if best is not None:
            lines.append(f"- The `{best.name}` baseline did at least as well on those rows: prefer it here.")
    random = [i.name for i in (c.a.identity, c.b.identity) if i.weights == "random-init"]
    if random:
        lines.append(
            f"- **Warning: trained on embeddings of RANDOMLY initialised encoder weights ({', '.join(random)}); "
            "a demo only, whose figures mean nothing.**"
        )
    return lines


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


def _mean_r1(m: MethodResult) -> float:
    return (m.metrics["a2b_r1"] + m.metrics["b2a_r1"]) / 2


def _winning_baseline(report: EvalReport) -> MethodResult | None:
    """The best training-free baseline when it did at least as well as the adapter on the test rows."""
    best = max((m for m in report.methods if m.kind == "baseline"), key=_mean_r1, default=None)
    return None if best is None or _mean_r1(best) < _mean_r1(report.methods[0]) else best


def _baseline_won(report: EvalReport) -> list[str]:
    """The advice a user needs when a training-free baseline did at least as well as the adapter here."""
    best = _winning_baseline(report)
    if best is None:
        return []
    return [
        "",
        f"**Prefer the `{best.name}` baseline for this data**: on these test rows it did at least as well as "
        f"the adapter (mean R@1 both ways {_mean_r1(best):.4f} against {_mean_r1(report.methods[0]):.4f}); "
        "see when a baseline is the better choice in embedeverything's docs/evaluation.md.",
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
