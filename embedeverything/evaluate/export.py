"""``ee export``: a store's embeddings projected into the shared space, with their ids, for other tools.

Parquet (one file, both sides, one row per (side, id): ``id``, ``side``, ``modality``, ``encoder``,
``label``, ``split``, ``embedding`` as a fixed-size list of float32) for vector databases and dataframes;
or ``.npy`` per side with a ``.ids.txt`` beside it (line i is the id of row i). Only rows embedded on a
side are exported for that side. Embeddings are L2-normalised by default, so that a dot product is the
cosine the adapter was trained for. Written chunk by chunk, then renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..adapter import Adapter, load_adapter
from ..errors import UserError
from ..files import atomic_open, atomic_path, write_text_atomic
from ..store import DONE, EmbeddingArray, Store
from .data import AdapterSource, EvalData, matching_array, projected_chunks

FORMATS = ("parquet", "npy")


def export_embeddings(
    store_location: str | None,
    adapter_path: AdapterSource,
    out: str | os.PathLike[str],
    format: str = "parquet",
    normalize: bool = True,
    sides: tuple[str, ...] = ("a", "b"),
) -> Path:
    """Write the projected embeddings; returns the Parquet file or the .npy folder.

    ``out`` ending in ``.parquet`` names the file; otherwise it is a folder (``embeddings.parquet`` in it,
    or the ``.npy`` files). ``adapter_path`` may be an open :class:`EvalData` (its store is exported; no
    ``store_location`` then), so that ``ee pair`` exports from what it evaluated without reloading.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    if isinstance(adapter_path, EvalData):
        if store_location is not None:
            raise ValueError("give store_location with an adapter path, not with an open EvalData")
        adapter, store = adapter_path.adapter, adapter_path.store
        arrays = {s: adapter_path.arrays[s] for s in sides}
        name = str(adapter_path.adapter_path)
    else:
        if store_location is None:
            raise ValueError("give the store to export with an adapter path")
        adapter = load_adapter(adapter_path)
        store = Store.open(str(store_location), read_only=True)
        arrays = _side_arrays(store, adapter, sides)
        name = str(adapter_path)
    meta = store.rows()
    info = _info(name, store, adapter, arrays, normalize)
    out = Path(out)
    if format == "parquet":
        target = out if out.suffix == ".parquet" else out / "embeddings.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(target, adapter, arrays, meta, normalize, info)
        return target
    out.mkdir(parents=True, exist_ok=True)
    _write_npy(out, adapter, arrays, meta, normalize, info)
    return out


def _side_arrays(store: Store, adapter: Adapter, sides: tuple[str, ...]) -> dict[str, EmbeddingArray]:
    """The arrays of the sides the store holds for this adapter: one side missing still exports the other."""
    arrays: dict[str, EmbeddingArray] = {}
    problems = []
    for side in sides:
        try:
            arrays[side] = matching_array(store, side, getattr(adapter.config, side))
        except UserError as e:
            problems.append(str(e))
    if not arrays:
        raise UserError(problems[0] if problems else "nothing to export")
    return arrays


def _info(
    name: str, store: Store, adapter: Adapter, arrays: dict[str, EmbeddingArray], normalize: bool
) -> dict:
    """Provenance written beside the embeddings (Parquet metadata or export.json)."""
    return {
        "adapter": name,
        "store": store.location,
        "shared_dim": adapter.config.shared_dim,
        "normalized": normalize,
        "sides": {
            s: {
                "encoder": a.encoder,
                "array": a.key,
                "modality": getattr(adapter.config, s).identity.modality,
            }
            for s, a in arrays.items()
        },
    }


def _write_parquet(
    target: Path,
    adapter: Adapter,
    arrays: dict[str, EmbeddingArray],
    meta: dict[str, np.ndarray],
    normalize: bool,
    info: dict,
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet export needs pyarrow: pip install 'embedeverything[eval]'") from None
    dim = adapter.config.shared_dim
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("side", pa.string()),
            ("modality", pa.string()),
            ("encoder", pa.string()),
            ("label", pa.string()),
            ("split", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ],
        metadata={"embedeverything": json.dumps(info)},
    )
    with atomic_path(target) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for side, arr in arrays.items():
            modality = getattr(adapter.config, side).identity.modality
            for rows, z in projected_chunks(adapter, side, arr, normalize):
                n = rows.size
                emb = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1), pa.float32()), dim)
                writer.write_table(
                    pa.Table.from_arrays(
                        [
                            pa.array([str(x) for x in meta["id"][rows]], pa.string()),
                            pa.array([side] * n, pa.string()),
                            pa.array([modality] * n, pa.string()),
                            pa.array([arr.encoder] * n, pa.string()),
                            pa.array([str(x) for x in meta["label"][rows]], pa.string()),
                            pa.array([str(x) for x in meta["split"][rows]], pa.string()),
                            emb,
                        ],
                        schema=schema,
                    )
                )


def _write_npy(
    out: Path,
    adapter: Adapter,
    arrays: dict[str, EmbeddingArray],
    meta: dict[str, np.ndarray],
    normalize: bool,
    info: dict,
) -> None:
    dim = adapter.config.shared_dim
    for side, arr in arrays.items():
        n = int((arr.state() == DONE).sum())
        with atomic_path(out / f"{side}.npy") as tmp_npy, atomic_open(out / f"{side}.ids.txt") as ids:
            mm = np.lib.format.open_memmap(str(tmp_npy), mode="w+", dtype=np.float32, shape=(n, dim))
            k = 0
            for rows, z in projected_chunks(adapter, side, arr, normalize):
                mm[k : k + rows.size] = z
                k += rows.size
                ids.writelines(f"{meta['id'][r]}\n" for r in rows)
            mm.flush()
            del mm
    write_text_atomic(out / "export.json", json.dumps(info, indent=2))
