"""embedeverything.weights and `ee weights`: fetch and verify against a reference hash that ships with
the plugin, over a real HTTP server on 127.0.0.1, including corrupted downloads and corrupted caches."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

import embedeverything as ee
from embedeverything.errors import UserError
from embedeverything.plugins import register_plugin, unregister_plugin
from embedeverything.weights import WeightFile, fetch, file_digest, verify

GOOD = b"pretend these are weights\n" * 1000
BAD = b"pretend these are weights\n" * 999 + b"but this one was tampered\n"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``: (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "good.bin").write_bytes(GOOD)
    (www / "bad.bin").write_bytes(BAD)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(www)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_then_verify(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    wf = WeightFile("good.bin", f"{base}/good.bin", tmp_path / "cache" / "good.bin", sha256=GOOD_SHA)
    assert verify(wf).state == "missing"
    status = fetch(wf)
    assert status.state == "ok" and wf.path.read_bytes() == GOOD
    assert verify(wf).state == "ok"
    assert [p.name for p in wf.path.parent.iterdir()] == ["good.bin"]  # no partial file left behind


def test_corrupted_download_is_refused_and_nothing_is_cached(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = server
    # the server hands out other bytes than the reference says
    wf = WeightFile("w.bin", f"{base}/bad.bin", tmp_path / "cache" / "w.bin", sha256=GOOD_SHA)
    with pytest.raises(UserError, match="does not match its reference"):
        fetch(wf)
    assert not wf.path.exists()
    assert list(wf.path.parent.iterdir()) == []
    assert verify(wf).state == "missing"


def test_verify_catches_a_corrupted_cache_and_fetch_repairs_it(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = server
    wf = WeightFile("good.bin", f"{base}/good.bin", tmp_path / "cache" / "good.bin", sha256=GOOD_SHA)
    fetch(wf)
    data = bytearray(wf.path.read_bytes())
    data[100] ^= 0xFF  # one flipped byte, size unchanged
    wf.path.write_bytes(bytes(data))
    status = verify(wf)
    assert status.state == "corrupt" and "CORRUPT" in status.describe()
    assert fetch(wf).state == "ok" and wf.path.read_bytes() == GOOD


def test_prefix_reference_and_no_reference(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    by_prefix = WeightFile("g.bin", f"{base}/good.bin", tmp_path / "a" / "g.bin", sha256_prefix=GOOD_SHA[:8])
    assert fetch(by_prefix).state == "ok"
    wrong_prefix = WeightFile("g.bin", f"{base}/good.bin", tmp_path / "b" / "g.bin", sha256_prefix="00000000")
    with pytest.raises(UserError, match="expected sha256 prefix 00000000"):
        fetch(wrong_prefix)
    unknown = WeightFile("g.bin", f"{base}/good.bin", tmp_path / "c" / "g.bin")
    status = fetch(unknown)
    assert status.state == "unverified" and status.sha256 == GOOD_SHA == file_digest(unknown.path)


def test_unreachable_and_missing_urls_fail_fast(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(UserError, match="failed"):
        fetch(WeightFile("x", f"{base}/absent.bin", tmp_path / "x", sha256=GOOD_SHA))
    with pytest.raises(UserError, match="cannot reach"):
        fetch(WeightFile("x", "https://weights.invalid/x.bin", tmp_path / "x", sha256=GOOD_SHA))


# ---- the CLI, with a plugin whose files are served locally -----------------------------------------


def _served_plugin(base: str, cache: Path) -> object:
    class Served(ee.Encoder):
        name, modality, dim = "served-test", "text", 4

        def load(self) -> ee.Weights:
            return ee.Weights(model_id="served", weights="sha256:" + GOOD_SHA)

        def embed_batch(self, items: list) -> object:
            raise NotImplementedError

        def weight_files(self) -> list[WeightFile]:
            return [
                WeightFile("good.bin", f"{base}/good.bin", cache / "good.bin", sha256=GOOD_SHA),
                WeightFile("bad.bin", f"{base}/bad.bin", cache / "bad.bin", sha256=GOOD_SHA),
            ]

    class Plugin:
        @ee.hookimpl
        def register_encoders(self, register: object) -> None:
            register(Served)

    return Plugin()


def run(argv: list[str]) -> int:
    from embedeverything.cli import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
    return int(ex.value.code)


def test_cli_fetch_and_verify(
    server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _ = server
    cache = tmp_path / "cache"
    register_plugin(_served_plugin(base, cache), name="served-test")
    try:
        assert run(["weights", "verify", "served-test"]) == 1
        assert "missing" in capsys.readouterr().out
        assert run(["weights", "fetch", "served-test"]) == 2  # the tampered file is refused
        err = capsys.readouterr().err
        assert "bad.bin" in err and "does not match its reference" in err
        assert (cache / "good.bin").read_bytes() == GOOD and not (cache / "bad.bin").exists()
        assert run(["weights", "verify", "served-test"]) == 1
        out = capsys.readouterr().out
        assert "ok:" in out and "missing" in out
        assert run(["weights", "list", "served-test"]) == 0
        assert f"sha256:{GOOD_SHA}" in capsys.readouterr().out
    finally:
        unregister_plugin("served-test")


def test_cli_bundled_encoders_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["weights", "list", "vggish", "-o", f"cache_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "sha256 prefix 10086976" in out and "sha256 prefix 970ea276" in out
    assert run(["weights", "verify", "vggish", "-o", f"cache_dir={tmp_path}"]) == 1
    assert (
        run(["weights", "list", "clip", "-o", "pretrained=laion400m_e32", "-o", f"cache_dir={tmp_path}"]) == 0
    )
    assert "sha256 prefix 46683a32" in capsys.readouterr().out
    # this machine is offline: the fetch must fail at once with the way out
    assert run(["weights", "fetch", "vggish", "-o", f"cache_dir={tmp_path}"]) == 2
    assert "on a machine with internet" in capsys.readouterr().err
