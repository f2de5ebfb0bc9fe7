"""``evaluate``: the adapter and the baselines, scored alike on the test rows, with diagnostics.

The test rows are the part of the trainer's split that neither training nor model selection saw. The
baselines are fitted on the train rows, tuned on the val rows, and scored on the same test rows with the
same code as the adapter, so one table answers the question a user has: did contrastive training earn its
keep over a linear map or no training at all? Large sets are subsampled with a fixed seed (the test part
to ``max_test_rows``: retrieval is ``O(n^2)``; the train part to ``max_train_rows`` for the baselines),
and the report says so.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from . import baselines as bl
from .data import AdapterSource, EvalData, SplitRows, eval_data, load_split_rows
from .diagnostics import csls, qb_norm, space_diagnostics
from .metrics import combine, cosine_matrix, direction_metrics, retrieval_metrics

MAX_TEST_ROWS = 5000
MAX_TRAIN_ROWS = 50000
MAX_VAL_ROWS = 2000
QB_BANK_ROWS = 3000


@dataclass
class MethodResult:
    name: str
    kind: str  # "adapter", "correction" or "baseline"
    metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    val_r1: float | None = None
    seconds: float = 0.0


@dataclass
class EvalReport:
    """The numbers of one evaluation: ``methods[0]`` is the adapter, then corrections, then baselines."""

    adapter: str
    store: str
    split: str
    encoders: dict[str, str]
    counts: dict[str, int]
    test_rows_used: int
    classes: int
    chance_r1: float
    methods: list[MethodResult]
    diagnostics: dict[str, float]
    seconds: float
    notes: list[str] = field(default_factory=list)
    zeroshot: dict[str, Any] | None = None  # filled by ``ee eval --zeroshot`` (see zeroshot.py)

    def method(self, name: str) -> MethodResult:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        """The report that :meth:`to_dict` wrote (``metrics.json``), so that the model card can be written
        again without evaluating again; JSON's nulls are NaN again."""
        methods = [
            MethodResult(**{**m, "metrics": {k: _nan(v) for k, v in m["metrics"].items()}})
            for m in d["methods"]
        ]
        diagnostics = {k: _nan(v) for k, v in d["diagnostics"].items()}
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in d.items() if k in known}
        return cls(
            **{**given, "methods": methods, "diagnostics": diagnostics, "chance_r1": _nan(d["chance_r1"])}
        )

    def columns(self) -> list[tuple[str, str]]:
        cols = [
            ("R@1 a→b", "a2b_r1"),
            ("R@1 b→a", "b2a_r1"),
            ("R@5", "r5"),
            ("R@10", "r10"),
            ("MedR a→b", "a2b_median_rank"),
            ("MedR b→a", "b2a_median_rank"),
        ]
        if self.classes:
            cols += [("mAP", "map"), ("class R@1", "class_r1"), ("class R@5", "class_r5")]
        return cols

    def rows(self) -> list[list[str]]:
        out = []
        for m in self.methods:
            cells = [m.name]
            for _, key in self.columns():
                v = m.metrics.get(key)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append("-")
                elif "rank" in key:
                    cells.append(f"{v:g}")
                else:
                    cells.append(f"{v:.3f}")
            out.append(cells)
        return out

    def table(self) -> Any:
        """A rich Table of the methods (print it with ``rich.print``)."""
        from rich.table import Table

        t = Table(
            title=f"{self.encoders['a']} + {self.encoders['b']}: {self.test_rows_used} test pairs "
            f"(chance R@1 {self.chance_r1:.4f})"
        )
        t.add_column("method")
        for label, _ in self.columns():
            t.add_column(label, justify="right")
        for cells in self.rows():
            t.add_row(*cells)
        return t

    def diagnostics_table(self) -> Any:
        from rich.table import Table

        t = Table(title="shared space diagnostics (adapter, test rows)")
        t.add_column("diagnostic")
        t.add_column("value", justify="right")
        for k, v in self.diagnostics.items():
            t.add_row(k, f"{v:.4g}")
        return t

    def markdown(self) -> str:
        """The methods table in Markdown (for the model card)."""
        head = ["method"] + [label for label, _ in self.columns()]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in self.rows()]
        return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """JSON has no NaN: those become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def _subsample(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    if rows.size <= k:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))


def _project(data: EvalData, side: str, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return getattr(data.adapter, side)(torch.from_numpy(x)).float()


def evaluate(
    adapter_path: AdapterSource,
    store_location: str | None = None,
    split_path: str | os.PathLike[str] | None = None,
    *,
    baselines: bool = True,
    corrections: bool = True,
    max_test_rows: int = MAX_TEST_ROWS,
    seed: int = 0,
) -> EvalReport:
    """Score the adapter (and the baselines) on the test rows of its split; see the module docstring.

    ``adapter_path`` may be an open :class:`EvalData`, so that a caller drawing figures and writing the
    card after the report loads the adapter and opens the store once.
    """
    t0 = time.perf_counter()
    data = eval_data(adapter_path, store_location)
    split = load_split_rows(data, split_path)
    _check_split_is_the_adapters(data, split)
    notes = []
    if split.dropped:
        notes.append(f"{split.dropped} rows of the split are no longer done on both sides and were left out")
    test = _subsample(split.test, max_test_rows, seed)
    if test.size < split.test.size:
        notes.append(f"test part subsampled to {test.size} of {split.test.size} rows (seed {seed})")
    t = _TestRows.read(data, test)
    methods = [MethodResult("adapter", "adapter", retrieval_metrics(t.sim, t.labels))]
    diagnostics = space_diagnostics(t.za, t.zb, t.sim)
    train = _subsample(split.train, MAX_TRAIN_ROWS, seed)
    if train.size < split.train.size:
        notes.append(f"baselines fitted on {train.size} of {split.train.size} train rows (seed {seed})")
    if corrections:
        methods += _corrections(data, t, _subsample(train, QB_BANK_ROWS, seed))
    if baselines:
        val = _subsample(split.val, MAX_VAL_ROWS, seed)
        if val.size < 2:
            notes.append("baselines skipped: the split has fewer than 2 validation rows to tune them on")
        else:
            methods += _baselines(data, t, train, val)
    name = str(adapter_path.adapter_path if isinstance(adapter_path, EvalData) else adapter_path)
    return _report(data, name, split, t, methods, diagnostics, notes, t0)


@dataclass
class _TestRows:
    """The test rows as every method scores them: raw embeddings, the adapter's, and their cosines."""

    rows: np.ndarray
    xa: np.ndarray
    xb: np.ndarray
    labels: np.ndarray | None  # class codes, None without any label
    za: torch.Tensor
    zb: torch.Tensor
    sim: torch.Tensor

    @classmethod
    def read(cls, data: EvalData, rows: np.ndarray) -> _TestRows:
        xa, xb = data.arrays["a"].read(rows), data.arrays["b"].read(rows)
        labels = None if data.labels is None else data.labels.codes[rows]
        if labels is not None and not (labels >= 0).any():
            labels = None
        za, zb = _project(data, "a", xa), _project(data, "b", xb)
        return cls(rows, xa, xb, labels, za, zb, cosine_matrix(za, zb))


def _corrections(data: EvalData, t: _TestRows, bank: np.ndarray) -> list[MethodResult]:
    """CSLS and query-bank normalisation of the adapter's cosines (the bank: train rows)."""
    t1 = time.perf_counter()
    out = [MethodResult("adapter + CSLS", "correction", retrieval_metrics(csls(t.sim), t.labels), {"k": 10})]
    out[-1].seconds = time.perf_counter() - t1
    t1 = time.perf_counter()
    bank_a = F.normalize(_project(data, "a", data.arrays["a"].read(bank)), dim=-1)
    bank_b = F.normalize(_project(data, "b", data.arrays["b"].read(bank)), dim=-1)
    na, nb = F.normalize(t.za, dim=-1), F.normalize(t.zb, dim=-1)
    beta = 20.0
    ab = direction_metrics(qb_norm(t.sim, bank_a @ nb.T, beta), t.labels)
    ba = direction_metrics(qb_norm(t.sim.T, bank_b @ na.T, beta), t.labels)
    out.append(
        MethodResult(
            "adapter + QB-norm",
            "correction",
            combine(ab, ba),
            {"beta": beta, "bank": int(bank.size)},
            seconds=time.perf_counter() - t1,
        )
    )
    return out


def _baselines(data: EvalData, t: _TestRows, train: np.ndarray, val: np.ndarray) -> list[MethodResult]:
    """Every baseline fitted on ``train``, tuned on ``val``, scored on the test rows."""
    arr_a, arr_b = data.arrays["a"], data.arrays["b"]
    ta, tb = arr_a.read(train), arr_b.read(train)
    va, vb = arr_a.read(val), arr_b.read(val)
    out = []
    for fitted in bl.fit_all(ta, tb, va, vb):
        ya, yb = fitted.embed(t.xa, t.xb)
        out.append(
            MethodResult(
                fitted.name,
                "baseline",
                retrieval_metrics(cosine_matrix(ya, yb), t.labels),
                fitted.params,
                fitted.val_r1,
                fitted.seconds,
            )
        )
    return out


def _report(
    data: EvalData,
    name: str,
    split: SplitRows,
    t: _TestRows,
    methods: list[MethodResult],
    diagnostics: dict[str, float],
    notes: list[str],
    t0: float,
) -> EvalReport:
    cfg = data.adapter.config
    return EvalReport(
        adapter=name,
        store=data.store.location,
        split=str(split.path),
        encoders={
            "a": f"{cfg.a.identity.name}[{cfg.a.head.kind}]",
            "b": f"{cfg.b.identity.name}[{cfg.b.head.kind}]",
        },
        counts={"train": int(split.train.size), "val": int(split.val.size), "test": int(split.test.size)},
        test_rows_used=int(t.rows.size),
        classes=0 if t.labels is None else int(np.unique(t.labels[t.labels >= 0]).size),
        chance_r1=bl.chance_r1(int(t.rows.size)),
        methods=methods,
        diagnostics=diagnostics,
        seconds=round(time.perf_counter() - t0, 3),
        notes=notes,
    )


def _check_split_is_the_adapters(data: EvalData, split: SplitRows) -> None:
    """The split's train rows (with its validation rows after a refit) must be the ones the adapter was
    trained on, or 'test' would leak."""
    from ..train.split import refit_rows, rows_hash

    raw = json.loads(split.path.read_text())
    train_rows = np.asarray(raw["rows"]["train"], dtype=np.int64)
    training = data.adapter.config.training
    if training.refit_epochs is not None:
        train_rows = refit_rows(train_rows, np.asarray(raw["rows"]["val"], dtype=np.int64))
    if rows_hash(data.meta["id"], train_rows) != training.row_ids_sha256:
        raise UserError(
            f"split {split.path} is not the one adapter {data.adapter_path} was trained on "
            "(its train rows differ from training.row_ids_sha256); pass the training run's split.json"
        )
