"""Two `ee embed` runs on one store at once, with manifests that overlap: every row keeps its own id.

The row list is a read-modify-write of the whole index; two writers that both read it before either wrote
gave their rows the same row numbers, and each wrote its vectors where the other's ids ended up.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from conftest import text_manifest

from embedeverything.manifest import read_manifest
from embedeverything.plugins import get_encoder
from embedeverything.store import DONE, Store

TRIALS = 20

# One process per writer runs all the trials (one import of the package, not forty), meeting the other
# process at a file barrier before each trial so that both start their `ee embed` together.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from embedeverything.cli import main

    work, me, other, manifest, side, trials = sys.argv[1:7]
    failed = []
    for k in range(int(trials)):
        open(os.path.join(work, f"ready-{k}-{me}"), "w").close()
        deadline = time.monotonic() + 60  # a peer that died never arrives
        while not os.path.exists(os.path.join(work, f"ready-{k}-{other}")):
            if time.monotonic() > deadline:
                sys.exit(f"trial {k}: the other writer never arrived")
            time.sleep(0.0005)
        store = os.path.join(work, f"S{k}.zarr")
        try:
            main(["embed", manifest, "--encoder", "test-text", "--side", side, "--store", store])
        except SystemExit as e:
            if e.code:
                failed.append(f"trial {k}: exit {e.code}")
    sys.exit("; ".join(failed) or None)
    """
)


def expected(manifests, side: int) -> dict[str, np.ndarray]:
    texts = {}
    for m in manifests:
        for p in read_manifest(m).pairs:
            texts[p.id] = (p.a.text, p.b.text)[side]
    ids = sorted(texts)
    vectors = get_encoder("test-text").embed([texts[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))


def test_two_writers_with_overlapping_manifests_keep_every_row_under_its_id(tmp_path):
    m1 = text_manifest(tmp_path / "M1.jsonl", 100, prefix="s", start=0)  # s0000-s0099
    m2 = text_manifest(tmp_path / "M2.jsonl", 100, prefix="s", start=50)  # s0050-s0149
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), me, other, str(m), side, str(TRIALS)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other, m, side in (("1", "2", m1, "a"), ("2", "1", m2, "b"))
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    want = {"a": expected([m1, m2], 0), "b": expected([m1, m2], 1)}
    for k in range(TRIALS):
        store = Store.open(tmp_path / f"S{k}.zarr", read_only=True)
        ids = [str(i) for i in store.ids()]
        assert sorted(ids) == [f"s{i:04d}" for i in range(150)], f"trial {k}"
        for arr in store.arrays():
            done = np.flatnonzero(arr.state() == DONE)
            assert done.size == 100, f"trial {k}: {arr.key}"
            got = arr.read(done)
            wrong = [
                ids[r]
                for r, v in zip(done, got, strict=True)
                if not np.allclose(v, want[arr.side][ids[r]], rtol=1e-5, atol=1e-6)
            ]
            assert not wrong, f"trial {k}: {arr.key}: {len(wrong)} rows hold another id's vector"
