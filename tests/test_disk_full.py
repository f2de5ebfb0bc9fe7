"""A write that finds no space: one line naming what, where and the space, exit status 4, nothing left behind.

Two real ways to run out of space without root:
- a small tmpfs mounted in a user namespace (``unshare -rm``): the kernel's own ENOSPC, from a real full file
  system, for `ee ingest`, `ee embed` and `ee train` (skipped where user namespaces are switched off);
- a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored so that the write fails instead of killing us): the
  kernel's EFBIG, on any Linux or macOS, which the CLI treats like a full disk.
EDQUOT needs a quota set up by root; its mapping is checked on the error value itself.
"""

from __future__ import annotations

import errno
import os
import resource
import shlex
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, run_ee, text_manifest

from embedeverything.errors import DISK_FULL_EXIT, disk_full, is_disk_full

LEFTOVERS = ("*.tmp*", "*.partial")


def _userns_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_on_small_disk(tmp_path, kb: int, free_kb: int, args: list[str]) -> subprocess.CompletedProcess:
    """`ee ARGS` with ``tmp_path/mnt`` a tmpfs of ``kb`` kB, of which ``free_kb`` are left free."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ee = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "embedeverything", *args])
    script = (
        f"mount -t tmpfs -o size={kb}k tmpfs {mnt} && "
        f"head -c {(kb - free_kb) * 1024} /dev/zero > {mnt}/filler && "
        f"{ee}; rc=$?; find {mnt} \\( -name '*.tmp*' -o -name '*.partial' \\) -printf 'LEFT %p\\n'; exit $rc"
    )
    return subprocess.run(
        ["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


needs_userns = pytest.mark.skipif(not _userns_works(), reason="user namespaces are switched off here")


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    m = text_manifest(d / "m.jsonl", 120)
    for side, dim in (("a", "16"), ("b", "24")):
        r = run_ee(
            "embed",
            str(m),
            "-e",
            "test-text",
            "-o",
            f"dim={dim}",
            "--side",
            side,
            "--store",
            str(d / "s.zarr"),
        )
        assert r.code == 0, r.err
    return d


def assert_one_line(p: subprocess.CompletedProcess, what: str) -> None:
    err = [
        line for line in p.stderr.splitlines() if line.startswith(("error", "internal error", "Traceback"))
    ]
    assert p.returncode == DISK_FULL_EXIT, p.stderr
    assert len(err) == 1 and err[0].startswith(f"error: could not write {what}"), p.stderr
    assert "No space left on device" in err[0] and "free on that file system" in err[0], err[0]
    assert "LEFT " not in p.stdout, p.stdout


@needs_userns
def test_embed_into_a_full_disk(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 1500)
    p = run_on_small_disk(
        tmp_path,
        128,
        128,
        ["embed", str(m), "-e", "test-text", "-o", "dim=256", "--store", str(tmp_path / "mnt" / "s.zarr")],
    )
    assert_one_line(p, "chunk ")
    assert "rows still to embed" in p.stderr  # an estimate of the space wanted


@needs_userns
def test_ingest_into_a_full_disk(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,a,b\n" + "".join(f"r{i},caption number {i},words {i}\n" for i in range(400)))
    p = run_on_small_disk(
        tmp_path, 64, 8, ["ingest", "table", str(table), "-o", str(tmp_path / "mnt" / "m.jsonl")]
    )
    assert_one_line(p, "m.jsonl in ")


@needs_userns
def test_train_into_a_full_disk(tmp_path, trained_store):
    args = ["train", str(trained_store / "s.zarr"), "--out", str(tmp_path / "mnt" / "run"), "--epochs", "2"]
    p = run_on_small_disk(tmp_path, 64, 12, [*args, "--no-compile"])
    assert_one_line(p, "")
    assert ".safetensors in " in p.stderr or ".json" in p.stderr


def _limit_file_size(nbytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_a_file_size_limit_is_reported_like_a_full_disk(tmp_path):
    m = text_manifest(tmp_path / "m.jsonl", 300)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedeverything",
            "ingest",
            "table",
            str(m),
            "-o",
            str(tmp_path / "out.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(20_000),
    )
    assert p.returncode == DISK_FULL_EXIT, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: could not write out.jsonl in "), p.stderr
    assert "File too large" in p.stderr
    assert not list(tmp_path.glob("*.tmp*")) and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_every_no_space_errno_is_one_line(tmp_path, code):
    e = OSError(code, os.strerror(code))
    assert is_disk_full(e) and is_disk_full(RuntimeError("wrapped")) is False
    try:
        raise RuntimeError("zarr wrapped it") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
        msg = str(disk_full(wrapped, "x.bin", tmp_path, "about 2.0 MB"))
    assert msg.startswith(f"could not write x.bin in {tmp_path}: {os.strerror(code)} (needs about 2.0 MB; ")
    assert "free on that file system" in msg and "\n" not in msg


def test_safetensors_rust_error_text_is_recognised(tmp_path):
    e = Exception(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )
    assert is_disk_full(e)
    assert "No space left on device" in str(disk_full(e, "adapter.safetensors", tmp_path))
