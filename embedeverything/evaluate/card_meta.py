"""The model card's metadata header, as the Hugging Face Hub reads it: YAML between ``---`` lines at the very
top of README.md. Only what a run knows goes in; what it cannot know (the license, the datasets' Hub ids)
goes in only when the user states it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..adapter import AdapterConfig
    from .report import EvalReport

#: The adapter's test figures in the card's ``model-index``, named as in ``metrics.json``.
INDEXED = ("a2b_r1", "b2a_r1", "a2b_r5", "b2a_r5", "a2b_r10", "b2a_r10", "a2b_map", "b2a_map")
_INDEXED_NAMES = {"r1": "R@1", "r5": "R@5", "r10": "R@10", "map": "class mAP"}
#: The shape of a Hub model id; the Hub refuses a card whose ``base_model`` is anything else.
_HUB_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")


def metadata_ids(name: str, value: str | Sequence[str] | None, most: int | None = None) -> tuple[str, ...]:
    """The ids a user gives for the metadata (``--license``, ``--dataset``), checked to be one line each:
    they go in as they are, and the Hub says whether it knows them."""
    values = (value,) if isinstance(value, str) else tuple(value or ())
    for v in values:
        if not isinstance(v, str) or not v.strip() or "\n" in v:
            raise UserError(f"--{name}: give an id of one line, not {v!r}")
    if most is not None and len(values) > most:
        raise UserError(f"--{name}: give at most {most}, not {len(values)}")
    return tuple(v.strip() for v in values)


def card_metadata(
    c: AdapterConfig,
    report: EvalReport | None = None,
    *,
    license: str | None = None,
    datasets: Sequence[str] = (),
) -> dict[str, Any]:
    """The card's metadata as the Hugging Face Hub reads it.

    ``base_model`` lists an encoder's recorded model id only when it has the shape of a Hub model id and
    its weights are not random: the Hub refuses a card with anything else there, and the Encoders table
    names every encoder anyway. ``model-index`` holds the adapter's test figures (keys of ``metrics.json``).
    """
    ids = (c.a.identity, c.b.identity)
    tags = ["embedeverything", *(i.modality for i in ids), "contrastive", "adapter"]
    meta: dict[str, Any] = {"library_name": "embedeverything", "tags": list(dict.fromkeys(tags))}
    if license:
        meta["license"] = license
    base = [i.model_id for i in ids if i.weights != "random-init" and _hub_id(i.model_id)]
    if base:
        meta["base_model"] = list(dict.fromkeys(base))
    if datasets:
        meta["datasets"] = list(datasets)
    if report is not None:
        meta["model-index"] = _model_index(c, report, datasets)
        if not meta["model-index"]:
            del meta["model-index"]
    return meta


def _hub_id(s: str) -> bool:
    return bool(_HUB_ID.fullmatch(s)) and len(s) <= 96 and "--" not in s and ".." not in s


def _model_index(c: AdapterConfig, report: EvalReport, datasets: Sequence[str]) -> list[dict[str, Any]]:
    modality = {"a": c.a.identity.modality, "b": c.b.identity.modality}
    metrics = []
    for key in INDEXED:
        v = report.methods[0].metrics.get(key)
        if v is None or not math.isfinite(v):
            continue
        src, dst = key[0], key[2]
        metrics.append(
            {
                "type": key,
                "name": f"{_INDEXED_NAMES[key[4:]]} {modality[src]}→{modality[dst]} (test)",
                "value": round(float(v), 4),
            }
        )
    if not metrics:
        return []
    dataset = (
        {"type": datasets[0], "name": datasets[0]}
        if datasets
        else {"type": "custom", "name": "test rows of the training data"}
    )
    return [
        {
            "name": f"{c.a.identity.name} + {c.b.identity.name} adapter",
            "results": [
                {
                    "task": {"type": "cross-modal-retrieval", "name": "Cross-modal retrieval"},
                    "dataset": {**dataset, "split": "test"},
                    "metrics": metrics,
                }
            ],
        }
    ]


def front_matter(meta: dict[str, Any]) -> list[str]:
    """YAML between ``---`` lines at the very top; safe_dump quotes any string that needs it."""
    import yaml

    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return ["---", *text.rstrip("\n").split("\n"), "---", ""]
