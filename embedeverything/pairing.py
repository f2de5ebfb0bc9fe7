"""`ee pair`: ingest -> embed a -> embed b -> train -> eval -> export, each stage skipped when done.

Every stage writes into one output folder and records a fingerprint of its inputs in ``pair.json``; a rerun
skips a stage whose fingerprint still matches and whose result is there, and continues one that was cut
short (embedding resumes chunk by chunk; training resumes from its checkpoint). ``force`` redoes all.

Each stage hands the next what it made instead of having it found again: the ingested pairs (the manifest
is read back only when ingestion is skipped), the arrays' keys, the adapter's path, and one open
``EvalData`` from which the report, the figures, the model card and the export are all drawn.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .files import write_text_atomic
from .pair_data import STATE_FILE, check_flags, detect_kind, ingest_data, labels_from_folders, listing

if TYPE_CHECKING:
    from .manifest import Manifest
    from .train import TrainConfig

#: the stages in the order they run; ``PairSummary.skipped`` names those that were up to date
STAGES = ("ingest", "embed a", "embed b", "train", "eval")
#: Fewer pairs cannot be split into train, validation and test parts worth training on.
MIN_PAIRS = 10
#: built-in losses that never read the labels: with another loss (``clip-label``, or a plugin's, which may),
#: new labels mean new training
LABEL_FREE_LOSSES = frozenset({"clip", "siglip", "vse-hinge"})


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
    # frames / every / window / pattern; a table's columns: a_col / b_col / label_col / split_col / id_col
    ingest_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    preset: str = "default"
    workers: int | None = None
    scheduler: str | None = None
    threads: int | None = None
    # label = the name of the folder holding each file; None: for videos all in class folders one level down
    labels_from_folders: bool | None = None
    figures: bool = True
    force: bool = False
    # the model card's metadata for the Hugging Face Hub: a license id and dataset ids, only as given
    license: str | None = None
    datasets: tuple[str, ...] = ()


@dataclass
class PairSummary:
    """What a run did, for the command's last lines and its exit status."""

    out: Path
    manifest: Path
    store: str
    adapter: Path | None = None
    rows_used: int = 0
    ingest_failures: int = 0
    embed_failures: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # of STAGES, those found up to date
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    card: Path | None = None
    export: Path | None = None
    random_weights: list[str] = field(default_factory=list)  # encoders that ran with random weights

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


@dataclass
class _Stages:
    """One ``ee pair`` run under way: what every stage reads, and where each records that it is done."""

    run: PairRun
    summary: PairSummary
    state: dict[str, Any]
    log: Log
    progress: Any
    labels: str = ""  # fingerprint of the rows' labels: the eval stage's outputs all show them

    def record(self, stage: str, value: dict[str, Any]) -> None:
        self.state[stage] = value
        _save_state(self.run.out, self.state)


def run_pair(run: PairRun, log: Log = print, progress: Any = None) -> PairSummary:
    """The whole method, resumable; see the module docstring."""
    from .train import make_config

    enc_a, enc_b = check_encoders(run)
    cfg = make_config(run.preset, **run.train_options)  # a bad setting stops us before any work
    kind = run.kind or detect_kind(run.data, run.clips)
    check_flags(run, kind)
    _prepare_out(run)
    summary = PairSummary(out=run.out, manifest=run.out / "manifest.jsonl", store=str(run.out / "store.zarr"))
    st = _Stages(run, summary, _load_state(run.out), log, progress)
    if kind in ("videos", "vggsound"):  # their sides are known before any work: frame (a), audio (b)
        _check_sides(("image", "audio"), enc_a, enc_b)
    m = _ingest_stage(st, kind)
    if not m.pairs:
        raise UserError(f"no pairs could be made from {run.data}; see {run.out / 'manifest.failures.jsonl'}")
    if len(m.pairs) < MIN_PAIRS:  # said before the embedding, which would take minutes for nothing
        more = " (or more per video: --every S, --frames K)" if kind in ("videos", "vggsound") else ""
        raise UserError(
            f"only {len(m.pairs)} pairs from {run.data}; at least {MIN_PAIRS} are needed to train: "
            f"add data{more}"
        )
    _check_sides((m.header.a, m.header.b), enc_a, enc_b)
    keys = _embed_stage(st)
    summary.adapter = _train_stage(st, cfg, keys)
    _eval_stage(st)
    return summary


def _prepare_out(run: PairRun) -> None:
    """The output folder, emptied of every stage's results when ``force`` says to redo them all."""
    out = run.out
    if run.force and out.exists():
        for name in ("manifest.jsonl", "manifest.failures.jsonl", STATE_FILE, "metrics.json", "README.md"):
            (out / name).unlink(missing_ok=True)
        for name in ("store.zarr", "train", "figures", "export"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _ingest_stage(st: _Stages, kind: str) -> Manifest:
    """The manifest: made again when the data or the options changed, else read (the one read of it here)."""
    from .manifest import read_manifest, write_manifest

    run, summary = st.run, st.summary
    manifest = summary.manifest
    by_folder, said = labels_from_folders(run, kind)
    if said:
        st.log(said)
    fp = _fp(
        {
            "kind": kind,
            "data": str(run.data.resolve()),
            "clips": str(run.clips),
            "options": run.ingest_options,
            "labels": by_folder,
            "files": listing(run.data, run.clips),
        }
    )
    if st.state.get("ingest", {}).get("fp") == fp and manifest.exists():
        summary.skipped.append("ingest")
        summary.ingest_failures = int(st.state["ingest"].get("failures", 0))
        st.log(f"ingest: up to date ({manifest})")
        return read_manifest(manifest)
    res = ingest_data(run, kind, manifest)
    if by_folder:
        from .ingest.videos import labelled_by_folder

        res.pairs = labelled_by_folder(res.pairs)
        write_manifest(manifest, res.pairs, res.a, res.b, res.source)
    summary.ingest_failures = len(res.failures)
    st.log(f"ingest ({kind}): {len(res.pairs)} pairs from {res.inputs} inputs, {len(res.failures)} failed")
    for line in res.failure_lines(examples=0)[1:]:  # by reason, and where the list is
        st.log(line)
    st.record("ingest", {"fp": fp, "failures": len(res.failures)})
    return res.as_manifest()


def _embed_stage(st: _Stages) -> dict[str, str]:
    """Each side's array key; embedding is a no-op when done and resumes chunk by chunk when cut short."""
    from .embed import embed_side
    from .encoder import options_given_by

    run, summary = st.run, st.summary
    keys = {}
    for side, name, opts in (("a", run.a, run.a_options), ("b", run.b, run.b_options)):
        with options_given_by(f"--{side}-opt"):  # a plugin's hints name the flag of `ee pair`
            rep = embed_side(
                summary.store,
                str(summary.manifest),
                side,
                name,
                opts,
                threads=run.threads,
                workers=run.workers,
                scheduler=run.scheduler,
                **(st.progress(side, name) if st.progress else {}),
            )
        keys[side] = rep.key
        summary.embed_failures[side] = rep.failed
        if not rep.chunks_run:
            summary.skipped.append(f"embed {side}")
        st.log(
            f"embed {side} ({name}): {rep.done} done, {rep.failed} failed"
            + ("" if rep.chunks_run else " (up to date)")
        )
    return keys


def _train_stage(st: _Stages, cfg: TrainConfig, keys: dict[str, str]) -> Path:
    """The adapter: kept while the rows and settings are those it was trained on, else trained (resuming
    from the checkpoint of a run with the same fingerprint that was cut short)."""
    from .store import Store, paired_rows
    from .train import train
    from .train.split import rows_hash
    from .train.trainer import ADAPTER_FILE

    run, summary = st.run, st.summary
    s = Store.open(summary.store, read_only=True)
    usable = paired_rows(s.embedding(keys["a"]), s.embedding(keys["b"]))
    summary.rows_used = int(usable.size)
    summary.random_weights = [
        arr.encoder for arr in (s.embedding(keys["a"]), s.embedding(keys["b"])) if _random(arr.identity)
    ]
    if usable.size < MIN_PAIRS:
        raise UserError(
            f"only {usable.size} pairs have both sides embedded; at least {MIN_PAIRS} are needed to train"
        )
    meta = s.rows()
    st.labels = _fp([meta["id"][usable].tolist(), meta["label"][usable].tolist()])
    fp = _fp(
        {
            "a": keys["a"],
            "b": keys["b"],
            "config": cfg.model_dump(mode="json"),
            "rows": rows_hash(s.ids(), usable),
            **({} if cfg.loss in LABEL_FREE_LOSSES else {"labels": st.labels}),
        }
    )
    train_dir = run.out / "train"
    adapter = train_dir / ADAPTER_FILE
    same = st.state.get("train", {}).get("fp") == fp
    if same and adapter.exists():
        summary.skipped.append("train")
        st.log(f"train: up to date ({adapter})")
        return adapter
    if not same:
        shutil.rmtree(train_dir, ignore_errors=True)  # other data or settings: start over
        st.record("train", {"fp": fp})
    result = train(
        summary.store,
        keys["a"],
        keys["b"],
        train_dir,
        cfg,
        progress=st.progress("train", None) if st.progress else None,
    )
    st.log(
        f"train: {result.epochs_run} epochs, best val R@1 {result.metrics.get('val_r1', float('nan')):.3f}"
    )
    st.record("train", {"fp": fp, "done": True})
    return result.adapter_path


def _random(identity: Any) -> bool:
    return identity is not None and identity.weights == "random-init"


def _eval_stage(st: _Stages) -> None:
    """Eval, figures, model card and export, all from one load of the adapter and one opening of the
    store; kept while the adapter and the rows' labels are those they were made from. The card alone is
    written again when only its metadata (license, datasets) or its layout changed."""
    from . import evaluate as ev
    from .evaluate.card import CARD_VERSION
    from .files import file_digest

    run, summary = st.run, st.summary
    assert summary.adapter is not None
    metrics_path = run.out / "metrics.json"
    made = {"adapter": file_digest(summary.adapter)[:16], "labels": st.labels}
    card_meta = {"license": run.license, "datasets": list(run.datasets)}
    card_made = {"version": CARD_VERSION, **card_meta}
    if st.state.get("eval") == made and metrics_path.exists() and _kept_eval(st, card_meta, card_made):
        return
    data = ev.open_eval_data(summary.adapter, summary.store)
    report = ev.evaluate(data)
    summary.metrics = json.loads(report.to_json())
    write_text_atomic(metrics_path, json.dumps(summary.metrics, indent=2))
    if run.figures:
        summary.figures = ev.make_figures(data, run.out / "figures")
    summary.card = ev.write_model_card(data, report, summary.figures, **card_meta)
    summary.export = ev.export_embeddings(None, data, run.out / "export")
    st.record("eval", made)
    st.record("card", card_made)


def _kept_eval(st: _Stages, card_meta: dict[str, Any], card_made: dict[str, Any]) -> bool:
    """An earlier run's eval outputs, kept; the card is written again from ``metrics.json`` when only its
    metadata or layout changed. False when that report cannot be read back: then all is made again."""
    from . import evaluate as ev

    summary, adapter = st.summary, st.summary.adapter
    assert adapter is not None
    metrics = json.loads((st.run.out / "metrics.json").read_text())
    _found_outputs(st)
    rewrite = st.state.get("card") != card_made or summary.card is None
    if rewrite:
        try:
            report = ev.EvalReport.from_dict(metrics)
        except (KeyError, TypeError, ValueError):
            return False
        summary.card = ev.write_model_card(adapter, report, summary.figures, **card_meta)
        st.record("card", card_made)
    summary.metrics = metrics
    summary.skipped.append("eval")
    st.log("eval: up to date" + (f"; model card written again ({summary.card})" if rewrite else ""))
    return True


def _found_outputs(st: _Stages) -> None:
    """What an earlier run's eval stage left: the figures, the model card and the export."""
    from .evaluate.card import CARD_FILE

    out, summary = st.run.out, st.summary
    assert summary.adapter is not None
    summary.figures = sorted((out / "figures").glob("*.png"))
    card = summary.adapter.parent / CARD_FILE
    summary.card = card if card.is_file() else None
    export = out / "export" / "embeddings.parquet"
    summary.export = export if export.is_file() else None
