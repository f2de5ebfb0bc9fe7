"""`ee pair`: ingest -> embed a -> embed b -> train -> eval -> export, each stage skipped when done.

Every stage writes into one output folder and records a fingerprint of its inputs in ``pair.json``; a rerun
skips a stage whose fingerprint still matches and whose result is there, and continues one that was cut
short (embedding resumes chunk by chunk; training resumes from its checkpoint). ``force`` redoes all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import write_text_atomic

STATE_FILE = "pair.json"
VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"}


@dataclass
class PairRun:
    """Everything ``ee pair`` needs; the CLI fills it from flags."""

    a: str
    b: str
    data: Path
    out: Path
    kind: str | None = None  # videos | vggsound | pairs | table; detected when None
    clips: Path | None = None  # vggsound: the folder of clips
    a_options: dict[str, Any] = field(default_factory=dict)
    b_options: dict[str, Any] = field(default_factory=dict)
    ingest_options: dict[str, Any] = field(default_factory=dict)  # frames / every / window / pattern
    train_options: dict[str, Any] = field(default_factory=dict)
    preset: str = "default"
    workers: int | None = None
    scheduler: str | None = None
    threads: int | None = None
    labels_from_folders: bool = False  # label = the name of the folder holding each file
    figures: bool = True
    force: bool = False


@dataclass
class PairSummary:
    out: Path
    manifest: Path
    store: str
    adapter: Path | None = None
    rows_used: int = 0
    ingest_failures: int = 0
    embed_failures: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    card: Path | None = None
    export: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.ingest_failures or any(self.embed_failures.values()) else 0


Log = Callable[[str], None]


def _fp(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_state(out: Path) -> dict[str, Any]:
    p = out / STATE_FILE
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_state(out: Path, state: dict[str, Any]) -> None:
    write_text_atomic(out / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def detect_kind(data: Path, clips: Path | None) -> str:
    """videos (a folder holding video files), pairs (a folder of files sharing stems), vggsound or table."""
    if not data.exists():
        raise UserError(f"--data {data} does not exist")
    if data.is_dir():
        for p in data.rglob("*"):
            if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                return "videos"
        return "pairs"
    if clips is not None:
        return "vggsound"
    if data.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return "table"
    raise UserError(f"cannot tell what kind of data {data} is; give --kind videos|vggsound|pairs|table")


def _listing(data: Path, clips: Path | None) -> list[Any]:
    """What ingestion depends on, cheaply: file names, sizes and times (a grown folder re-ingests)."""
    roots = [data] + ([clips] if clips is not None else [])
    out: list[Any] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name.startswith("manifest") or ".zarr" in p.parts[-2:]:
                continue
            st = p.stat()
            out.append((str(p), st.st_size, st.st_mtime_ns))
    return out


def _ingest(run: PairRun, kind: str, manifest: Path) -> Any:
    from . import ingest as ing

    opts = ing.IngestOptions()
    io = dict(run.ingest_options)
    if kind == "videos":
        plan = ing.FramePlan(
            **{k: v for k, v in io.items() if k in ("frames", "every", "window") and v is not None}
        )
        return ing.ingest_videos(run.data, manifest, plan, opts)
    if kind == "vggsound":
        if run.clips is None:
            raise UserError("VGG-Sound data needs --clips DIR (the folder of downloaded clips)")
        plan = ing.FramePlan(
            **{k: v for k, v in io.items() if k in ("frames", "every", "window") and v is not None}
        )
        kw = {"pattern": io["pattern"]} if io.get("pattern") else {}
        return ing.ingest_vggsound(run.data, run.clips, manifest, plan=plan, opts=opts, **kw)
    if kind == "pairs":
        return ing.ingest_pairs(run.data, manifest, opts)
    if kind == "table":
        return ing.ingest_table(run.data, manifest, opts=opts)
    raise UserError(f"unknown --kind {kind!r}; expected videos, vggsound, pairs or table")


def _label_by_folder(manifest: Path) -> None:
    """Give every pair the name of the folder its first file sits in (``videos/dog/1.mp4`` -> ``dog``)."""
    from .manifest import read_manifest, write_manifest

    m = read_manifest(manifest)
    pairs = []
    for p in m.pairs:
        ref = p.a if p.a.path is not None else p.b
        label = Path(ref.path).parent.name if ref.path is not None else None
        pairs.append(p.model_copy(update={"label": label or p.label}))
    write_manifest(manifest, pairs, m.header.a, m.header.b, m.header.source)


def _check_sides(modalities: tuple[str, str], enc_a: Any, enc_b: Any) -> None:
    for side, want, enc in (("a", modalities[0], enc_a), ("b", modalities[1], enc_b)):
        if want != enc.modality:
            hint = "; swap --a and --b" if set(modalities) == {enc_a.modality, enc_b.modality} else ""
            raise UserError(
                f"side {side} of the data is {want} (side a {modalities[0]}, side b {modalities[1]}) "
                f"but --{side} {enc.name} embeds {enc.modality}{hint}"
            )


def check_encoders(run: PairRun) -> tuple[Any, Any]:
    """Both encoders exist, take their options and embed different modalities: before any work."""
    from .plugins import get_encoder

    enc_a = get_encoder(run.a, **run.a_options)
    enc_b = get_encoder(run.b, **run.b_options)
    if enc_a.modality == enc_b.modality:
        raise UserError(
            f"--a {run.a} and --b {run.b} both embed {enc_a.modality}: pair two modalities "
            "(e.g. --a clip --b vggish)"
        )
    return enc_a, enc_b


def run_pair(run: PairRun, log: Log = print, progress: Any = None) -> PairSummary:
    """The whole method, resumable; see the module docstring."""
    from .embed import embed_side
    from .manifest import read_manifest
    from .train.config import TrainConfig, make_config

    enc_a, enc_b = check_encoders(run)
    cfg: TrainConfig = make_config(run.preset, **run.train_options)  # a bad setting stops us before any work
    kind = run.kind or detect_kind(run.data, run.clips)
    out = run.out
    if run.force and out.exists():
        for name in ("manifest.jsonl", "manifest.failures.jsonl", STATE_FILE, "metrics.json", "README.md"):
            (out / name).unlink(missing_ok=True)
        for name in ("store.zarr", "train", "figures", "export"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out)
    manifest = out / "manifest.jsonl"
    store = str(out / "store.zarr")
    summary = PairSummary(out=out, manifest=manifest, store=store)

    if kind in ("videos", "vggsound"):  # their sides are known before any work: frame (a), audio (b)
        _check_sides(("image", "audio"), enc_a, enc_b)

    # 1. ingest
    ingest_fp = _fp(
        {
            "kind": kind,
            "data": str(run.data.resolve()),
            "clips": str(run.clips),
            "options": run.ingest_options,
            "labels": run.labels_from_folders,
            "files": _listing(run.data, run.clips),
        }
    )
    if state.get("ingest", {}).get("fp") == ingest_fp and manifest.exists():
        summary.skipped.append("ingest")
        summary.ingest_failures = int(state["ingest"].get("failures", 0))
        log(f"ingest: up to date ({manifest})")
    else:
        res = _ingest(run, kind, manifest)
        if run.labels_from_folders:
            _label_by_folder(manifest)
        summary.ingest_failures = len(res.failures)
        log(f"ingest ({kind}): {len(res.pairs)} pairs from {res.inputs} inputs, {len(res.failures)} failed")
        state["ingest"] = {"fp": ingest_fp, "failures": len(res.failures)}
        _save_state(out, state)
    m = read_manifest(manifest)
    if not m.pairs:
        raise UserError(f"no pairs could be made from {run.data}; see {out / 'manifest.failures.jsonl'}")
    _check_sides((m.header.a, m.header.b), enc_a, enc_b)

    # 2-3. embed each side (a no-op when done; resumes chunk by chunk)
    keys = {}
    for side, name, opts in (("a", run.a, run.a_options), ("b", run.b, run.b_options)):
        rep = embed_side(
            store,
            str(manifest),
            side,
            name,
            opts,
            threads=run.threads,
            workers=run.workers,
            scheduler=run.scheduler,
            **(progress(side, name) if progress else {}),
        )
        keys[side] = rep.key
        summary.embed_failures[side] = rep.failed
        log(
            f"embed {side} ({name}): {rep.done} done, {rep.failed} failed"
            + ("" if rep.chunks_run else " (up to date)")
        )

    # 4. train
    from .store import Store, paired_rows
    from .train.split import rows_hash
    from .train.trainer import ADAPTER_FILE, train

    s = Store.open(store, read_only=True)
    ida, idb = s.embedding(keys["a"]), s.embedding(keys["b"])
    usable = paired_rows(ida, idb)
    summary.rows_used = int(usable.size)
    if usable.size < 10:
        raise UserError(f"only {usable.size} pairs have both sides embedded; at least 10 are needed to train")
    train_fp = _fp(
        {
            "a": keys["a"],
            "b": keys["b"],
            "config": cfg.model_dump(mode="json"),
            "rows": rows_hash(s.ids(), usable),
        }
    )
    train_dir = out / "train"
    adapter = train_dir / ADAPTER_FILE
    if state.get("train", {}).get("fp") == train_fp and adapter.exists():
        summary.skipped.append("train")
        log(f"train: up to date ({adapter})")
    else:
        if state.get("train", {}).get("fp") != train_fp:
            shutil.rmtree(train_dir, ignore_errors=True)  # other data or settings: start over
            state["train"] = {"fp": train_fp}
            _save_state(out, state)
        result = train(
            store,
            keys["a"],
            keys["b"],
            train_dir,
            cfg,
            resume=True,
            progress=progress("train", None) if progress else None,
        )
        adapter = result.adapter_path
        log(
            f"train: {result.epochs_run} epochs, best val R@1 {result.metrics.get('val_r1', float('nan')):.3f}"
        )
        state["train"] = {"fp": train_fp, "done": True}
        _save_state(out, state)
    summary.adapter = adapter
    _evaluate(run, summary, state, log)
    return summary


def _evaluate(run: PairRun, summary: PairSummary, state: dict[str, Any], log: Log) -> None:
    """Eval, figures, model card and export: filled in by the evaluation stage."""
    try:
        from . import evaluate as ev
    except ImportError:
        return
    if not hasattr(ev, "evaluate"):
        return
    assert summary.adapter is not None
    adapter_hash = hashlib.sha256(summary.adapter.read_bytes()).hexdigest()[:16]
    metrics_path = run.out / "metrics.json"
    if state.get("eval", {}).get("adapter") == adapter_hash and metrics_path.exists():
        summary.skipped.append("eval")
        summary.metrics = json.loads(metrics_path.read_text())
        log("eval: up to date")
    else:
        report = ev.evaluate(summary.adapter, summary.store)
        summary.metrics = json.loads(report.to_json())
        write_text_atomic(metrics_path, json.dumps(summary.metrics, indent=2))
        if run.figures:
            summary.figures = ev.make_figures(
                summary.adapter, run.out / "figures", store_location=summary.store
            )
        summary.card = ev.write_model_card(summary.adapter, report, summary.figures)
        summary.export = ev.export_embeddings(summary.store, summary.adapter, run.out / "export")
        state["eval"] = {"adapter": adapter_hash}
        _save_state(run.out, state)
