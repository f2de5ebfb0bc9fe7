"""``embedeverything.pair``: ``ee pair`` from Python, and what ``ee pair`` itself calls.

The options are ``ee pair``'s flags under their Python names (``--a-col`` is ``a_col``, ``--no-figures`` is
``figures=False``), except that ``a_opt``, ``b_opt`` and ``train_opt`` are dicts rather than ``key=value``
lists. The command builds the same options from its flags and calls :func:`pair`, so that the command and a
script run one code path and a script gets back what the command prints, as a :class:`PairResult`.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .pair_data import default_out
from .pairing import STAGES, PairRun, PairSummary, run_pair

#: what :class:`PairOptions` passes to training under the same name
TRAIN_FIELDS = ("epochs", "loss", "lr", "batch_size", "head_a", "head_b", "seed", "refit", "anchors")
#: ingest options of videos and VGG-Sound, and a table's columns
INGEST_FIELDS = ("frames", "every", "window", "pattern")
COLUMN_FIELDS = ("a_col", "b_col", "label_col", "split_col", "id_col")


@dataclass(frozen=True)
class PairOptions:
    """Every option of ``ee pair`` beyond the encoders, the data and the output folder; None: the default
    (detected, or the preset's). See ``ee pair --help`` for what each does."""

    kind: str | None = None
    clips: str | os.PathLike[str] | None = None
    a_opt: Mapping[str, Any] | None = None
    b_opt: Mapping[str, Any] | None = None
    frames: int | None = None
    every: float | None = None
    window: float | None = None
    pattern: str | None = None
    a_col: str | None = None
    b_col: str | None = None
    label_col: str | None = None
    split_col: str | None = None
    id_col: str | None = None
    labels_from_folders: bool | None = None
    preset: str = "default"
    epochs: int | None = None
    loss: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    head_a: str | None = None
    head_b: str | None = None
    seed: int | None = None
    refit: bool | None = None
    anchors: str | None = None
    train_opt: Mapping[str, Any] | None = None
    workers: int | None = None
    scheduler: str | None = None
    threads: int | None = None
    figures: bool = True
    force: bool = False
    license: str | None = None  # a Hub license id for the model card (apache-2.0, mit, other...)
    dataset: str | Sequence[str] | None = None  # Hub dataset ids for the model card, one or several

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> PairOptions:
        """The options from keywords; an unknown name is a TypeError naming the nearest real one."""
        names = [f.name for f in fields(cls)]
        for key in options:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise TypeError(f"pair() got an unexpected option {key!r}{hint}")
        return cls(**options)


def _dict(name: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{name} takes a dict of options, e.g. {{'random_init': True}}, not {value!r}")
    return dict(value)


def pair_run(
    a: str, b: str, data: str | os.PathLike[str], out: str | os.PathLike[str] | None, o: PairOptions
) -> PairRun:
    """What :func:`run_pair` runs, from the options as the user gave them."""
    from .evaluate.card_meta import metadata_ids

    data = Path(data)
    train = _dict("train_opt", o.train_opt)
    train.update({k: getattr(o, k) for k in TRAIN_FIELDS if getattr(o, k) is not None})
    ingest: dict[str, Any] = {k: getattr(o, k) for k in INGEST_FIELDS}
    # a column not given stays out, so that the ingest's fingerprint is the same as without it
    ingest.update({k: getattr(o, k) for k in COLUMN_FIELDS if getattr(o, k) is not None})
    licence = metadata_ids("license", o.license, most=1)
    return PairRun(
        a=a,
        b=b,
        data=data,
        out=Path(out) if out is not None else default_out(data, a, b),
        kind=o.kind,
        clips=None if o.clips is None else Path(o.clips),
        a_options=_dict("a_opt", o.a_opt),
        b_options=_dict("b_opt", o.b_opt),
        ingest_options=ingest,
        train_options=train,
        preset=o.preset,
        workers=o.workers,
        scheduler=o.scheduler,
        threads=o.threads,
        labels_from_folders=o.labels_from_folders,
        figures=o.figures,
        force=o.force,
        license=licence[0] if licence else None,
        datasets=metadata_ids("dataset", o.dataset),
    )


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Scores:
    """R@1 and R@10 both ways of one method on the run's test rows (NaN where not measured)."""

    name: str
    a2b_r1: float
    b2a_r1: float
    a2b_r10: float
    b2a_r10: float

    @classmethod
    def of(cls, method: Mapping[str, Any]) -> Scores:
        m = method["metrics"]
        return cls(method["name"], *(_num(m.get(k)) for k in ("a2b_r1", "b2a_r1", "a2b_r10", "b2a_r10")))


def headline(metrics: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The adapter's entry in a report (``metrics.json``) and the best baseline's by mean R@1, or None."""
    methods = metrics.get("methods") or []
    ours = next((m for m in methods if m.get("kind") == "adapter"), None)
    baselines = [m for m in methods if m.get("kind") == "baseline"]
    return ours, max(baselines, key=_mean_r1, default=None)


def _mean_r1(method: Mapping[str, Any]) -> float:
    v = method["metrics"].get("r1")
    return -1.0 if v is None else float(v)


@dataclass(frozen=True)
class PairResult:
    """What a run made and measured: what ``ee pair`` prints, with the paths of everything it wrote.

    ``adapter_scores`` and ``best_baseline`` are the figures on the run's own test rows (``test_rows`` of
    them), the whole report being ``metrics`` (as in ``metrics.json``). ``stages_skipped`` are those found up
    to date. Rows that failed are counted, not raised: ``exit_code`` is what ``ee pair`` exits with.
    """

    out: Path
    adapter: Path
    manifest: Path
    store: str
    metrics_file: Path
    card: Path | None
    figures: tuple[Path, ...]
    export: Path | None
    adapter_scores: Scores
    best_baseline: Scores | None
    test_rows: int
    chance_r1: float
    stages_run: tuple[str, ...]
    stages_skipped: tuple[str, ...]
    rows_used: int
    ingest_failures: int
    embed_failures: Mapping[str, int]
    random_weights: tuple[str, ...]
    metrics: Mapping[str, Any] = field(repr=False)

    @property
    def exit_code(self) -> int:
        """0, or 1 when some rows failed (each recorded: see the manifest's failures and the store)."""
        return 1 if self.ingest_failures or any(self.embed_failures.values()) else 0

    @classmethod
    def of(cls, s: PairSummary) -> PairResult:
        assert s.adapter is not None
        ours, best = headline(s.metrics)
        return cls(
            out=s.out,
            adapter=s.adapter,
            manifest=s.manifest,
            store=s.store,
            metrics_file=s.out / "metrics.json",
            card=s.card,
            figures=tuple(s.figures),
            export=s.export,
            adapter_scores=Scores.of(ours or {"name": "adapter", "metrics": {}}),
            best_baseline=None if best is None else Scores.of(best),
            test_rows=int(s.metrics.get("test_rows_used") or 0),
            chance_r1=_num(s.metrics.get("chance_r1")),
            stages_run=tuple(x for x in STAGES if x not in s.skipped),
            stages_skipped=tuple(x for x in STAGES if x in s.skipped),
            rows_used=s.rows_used,
            ingest_failures=s.ingest_failures,
            embed_failures=dict(s.embed_failures),
            random_weights=tuple(s.random_weights),
            metrics=s.metrics,
        )


def pair(
    a: str,
    b: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    log: Callable[[str], None] | None = None,
    progress: Any = None,
    **options: Any,
) -> PairResult:
    """``ee pair`` from Python: ingest ``data``, embed side a with encoder ``a`` and side b with ``b``,
    train, evaluate against the baselines, draw, write the model card and export, into ``out`` (default
    ``<data>.<a>-<b>`` beside the data); each stage is skipped when already done, as in the command.

    ``options`` are those of :class:`PairOptions` (``ee pair``'s flags by their Python names). A user's
    mistake raises :class:`~embedeverything.UserError` before any work where it can be seen then (its
    message names ``ee pair``'s flags); Ctrl-C raises KeyboardInterrupt with the finished work kept.
    The stage lines go to ``log`` (default: the ``embedeverything`` logger at INFO); ``progress`` is the
    command's progress display (a factory of each stage's callbacks), None for none.

    >>> r = embedeverything.pair("clip", "vggish", "videos/", epochs=50)  # doctest: +SKIP
    >>> r.adapter_scores.a2b_r1, r.best_baseline, r.adapter
    """
    run = pair_run(a, b, data, out, PairOptions.of(options))
    say = log if log is not None else logging.getLogger("embedeverything").info
    return PairResult.of(run_pair(run, log=say, progress=progress))
