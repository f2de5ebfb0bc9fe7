"""``ee serve`` over real HTTP: the real command in its own process (``--port 0``), asked with http.client,
or with raw sockets where the exact bytes matter (request targets no client would normalise, Host
headers, chunked bodies, bodies never sent).

The index: ~30 pairs of a PNG (side a, test-image in a shared space, so test-text is its text tower) and
a window of a WAV tone (side b, test-audio); two more pairs name hostile files as their image. Every
response any helper reads is checked for the security headers.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import media
import numpy as np
import pytest
from conftest import ROOT, ee_main
from serving import Server

from embedeverything.decoder_pool import HANG_ON_ENV
from embedeverything.embed import embed_side
from embedeverything.manifest import MediaRef, Pair, write_manifest
from embedeverything.store import Store
from embedeverything.train import make_config, train

pytest.importorskip("lancedb")

FAST = dict(checkpoint_every_s=1e9, threads=1)
N = 30  # ordinary pairs (rows 0..29); rows 30 and 31 name hostile files as their image
EVIL_LABEL = "<script>alert(1)</script>"
LABELLED = 5  # the row with that label
HANG = "img007.png"  # the hang server's decoders hang on this file
PAGE = ROOT / "embedeverything" / "serve" / "page"
SPACE = {"dim": 16, "space": "tspace"}


def colour(i: int) -> tuple[int, int, int]:
    return (53 * i) % 256, (97 * i + 40) % 256, (151 * i + 80) % 256


def make_pairs(root: Path, start: int, n: int) -> list[Pair]:
    """Pair ``i``: a PNG of its own colour (640x400 for odd ``i``, else 48x32), and a window of a 4 s tone
    (three windows a file, each of its own start and length)."""
    pairs = []
    for i in range(start, start + n):
        img, tone = f"img/img{i:03d}.png", f"wav/tone{i // 3}.wav"
        media.write_image(root / img, colour(i), (640, 400) if i % 2 else (48, 32))
        if not (root / tone).exists():
            media.write_tone(root / tone, 4.0, 300.0 + 90 * (i // 3))
        s = (i % 3) * 1.2
        pairs.append(
            Pair(
                id=f"p{i:03d}",
                a=MediaRef(kind="image", path=img),
                b=MediaRef(kind="audio", path=tone, start=s, end=round(s + 0.6 + 0.1 * (i % 4), 2)),
                label=EVIL_LABEL if i == LABELLED else f"colour{i % 5}",
            )
        )
    return pairs


def hostile_pairs(root: Path) -> list[Pair]:
    """Images a browser must never get as they are: an SVG with a script, and HTML named as a PNG."""
    (root / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (root / "page.png").write_text("<html><body><script>alert(1)</script></body></html>")
    return [
        Pair(
            id=f"evil-{k}",
            a=MediaRef(kind="image", path=name),
            b=MediaRef(kind="audio", path=f"wav/tone{k}.wav", start=0.0, end=1.0 + 0.1 * k),
        )
        for k, name in enumerate(("evil.svg", "page.png"))
    ]


@dataclass
class Data:
    root: Path
    store: str
    manifest: Path
    pairs: list[Pair]
    adapter: Path  # side a has a text tower
    plain: Path  # side a is test-image without a space: no text tower

    def row(self, id_: str) -> int:
        return [p.id for p in self.pairs].index(id_)

    def embed(self) -> None:
        """The manifest written, and its rows not yet embedded embedded on both sides."""
        write_manifest(self.manifest, self.pairs, "image", "audio")
        for side, enc, opts in (("a", "test-image", SPACE), ("b", "test-audio", {"dim": 12})):
            embed_side(self.store, str(self.manifest), side, enc, opts, chunk_rows=16, decode_workers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("serve")
    pairs = make_pairs(root, 0, N) + hostile_pairs(root)
    d = Data(root, str(root / "s.zarr"), root / "manifest.jsonl", pairs, Path(), Path())
    d.embed()
    embed_side(d.store, str(d.manifest), "a", "test-image", {"dim": 16}, chunk_rows=16, decode_workers=1)
    arrays = Store.open(d.store, read_only=True).find()
    keys = {(a.side, a.identity.shared_space is not None): a.key for a in arrays}
    cfg = make_config(epochs=2, **FAST)
    d.adapter = train(d.store, keys["a", True], keys["b", False], root / "run", cfg).adapter_path
    d.plain = train(d.store, keys["a", False], keys["b", False], root / "plain", cfg).adapter_path
    for adapter in (d.adapter, d.plain):
        assert ee_main("index", str(adapter)) == 0
    return d


# -- a server process, and asking it


@pytest.fixture(scope="module")
def server(data, tmp_path_factory):
    """The index's server, with a 1 MB upload limit and its temporary files in a folder of the test's."""
    folder = tmp_path_factory.mktemp("server")
    (folder / "tmp").mkdir()
    srv = Server([str(data.adapter), "--max-upload-mb", "1"], folder, {"TMPDIR": str(folder / "tmp")})
    yield srv
    srv.stop()


def check_safe(headers: dict[str, str]) -> None:
    assert headers.get("content-security-policy") == "default-src 'self'", headers
    assert headers.get("x-content-type-options") == "nosniff", headers


def call(
    srv: Server, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers={"Host": srv.hostport, **(headers or {})})
        r = conn.getresponse()
        got = {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()
    check_safe(got[0])
    return r.status, *got


def api(srv: Server, target: str, **kw) -> tuple[int, dict]:
    status, _, body = call(srv, "GET", target, **kw)
    return status, json.loads(body)


def upload(
    srv: Server, name: str, body: bytes, pick: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    target = f"/api/upload?name={quote(name)}" + (f"&pick={pick}" if pick else "")
    status, _, got = call(srv, "POST", target, body, headers)
    return status, json.loads(got)


def raw(srv: Server, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Bytes sent as they are; the answer read to the end (requests say ``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(request)
        got = b""
        while piece := s.recv(1 << 16):
            got += piece
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    check_safe(headers)
    return int(lines[0].split()[1]), headers, body


def request(
    srv: Server, target: bytes, method: bytes = b"GET", host: bytes | None = None, extra: bytes = b""
) -> bytes:
    host = srv.hostport.encode() if host is None else host
    return b"%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" % (method, target, host, extra)


def post_head(srv: Server, name: str, header: str) -> bytes:
    return request(srv, f"/api/upload?name={quote(name)}".encode(), b"POST", extra=header.encode() + b"\r\n")


def png_of(data: Data, row: int) -> bytes:
    return (data.root / data.pairs[row].a.path).read_bytes()


# -- the routes


def test_page_script_style_favicon_and_head(server):
    for target, name, ctype in (
        ("/", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
        ("/app.css", "app.css", "text/css"),
    ):
        status, headers, body = call(server, "GET", target)
        assert (status, headers["content-type"]) == (200, f"{ctype}; charset=utf-8")
        assert body == (PAGE / name).read_bytes()
    status, headers, body = call(server, "GET", "/favicon.ico")
    assert (status, body) == (204, b"")
    status, headers, body = raw(server, request(server, b"/", b"HEAD"))
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) == len((PAGE / "index.html").read_bytes())


def test_errors_carry_the_security_headers_too(server):
    """Those the HTTP layer makes itself (an unknown method, a malformed request line) included: every
    helper checks both headers on whatever it reads."""
    assert call(server, "GET", "/nothing")[0] == 404
    assert call(server, "GET", "/api/search")[0] == 400
    assert call(server, "DELETE", "/")[0] == 501
    assert raw(server, b"NONSENSE\r\n\r\n")[0] == 400
    assert raw(server, b"GET / HTTP/2.0\r\n\r\n")[0] == 505
    assert raw(server, b"GET / HTTP/1.x\r\n\r\n")[0] == 400
    assert raw(server, b"GET /\r\n\r\n")[0] == 403  # HTTP/0.9: no Host header
    assert raw(server, b"GET /" + b"x" * (65537 - 5))[0] == 414  # all of it read: no reset
    status, headers, body = raw(server, request(server, b"/media/a/0.jpg"))
    assert status == 200 and headers["content-type"] == "image/jpeg"


def test_info_names_sides_counts_and_the_text_tower(server):
    status, info = api(server, "/api/info")
    assert status == 200
    assert info["sides"] == {
        "a": {"encoder": "test-image", "modality": "image", "indexed": N, "embedded": N},
        "b": {"encoder": "test-audio", "modality": "audio", "indexed": N + 2, "embedded": N + 2},
    }
    assert info["text"] == {
        "enabled": True,
        "how": "test-text shares test-image's space 'tspace'",
        "reason": "",
    }
    assert ".png" in info["uploads"]["image"] and ".wav" in info["uploads"]["audio"]
    assert ".mp4" in info["uploads"]["video"] and info["per_page"] == 10


def test_search_by_words_one_list_per_side_paged_by_token(server, data):
    status, first = api(server, "/api/search?q=" + quote("a red square"))
    assert status == 200 and first["query"] == "a red square" and "test-text" in first["through"]
    token = first["token"]
    pages = [first] + [api(server, f"/api/search?token={token}&page={p}")[1] for p in (1, 2, 3)]
    assert [[lst["side"] for lst in page["lists"]] for page in pages] == [["a", "b"]] * 4
    for k, side in enumerate("ab"):
        lists = [page["lists"][k] for page in pages]
        rows = lists[0]["rows"]
        assert rows == (N if side == "a" else N + 2)
        for p, lst in enumerate(lists):
            ranks = [h["rank"] for h in lst["hits"]]
            assert ranks == list(range(10 * p + 1, min(10 * p + 10, rows) + 1)), (side, p, ranks)
            assert lst["more"] == (rows > 10 * (p + 1)), (side, p)
        hits = [h for lst in lists for h in lst["hits"]]
        assert sorted(h["row"] for h in hits) == sorted({h["row"] for h in hits})  # no row twice
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        for h in hits:
            pair, shown = data.pairs[h["row"]], h["pair"]
            assert (h["id"], h["label"]) == (pair.id, pair.label or "")
            assert shown["a"]["src"] == f"/media/a/{h['row']}.jpg" and shown["a"]["file"] == pair.a.path
            assert shown["b"]["src"] == f"/media/b/{h['row']}.wav"
            assert (shown["b"]["start"], shown["b"]["end"]) == (pair.b.start, pair.b.end)
    assert api(server, f"/api/search?token={token}")[1] == first
    assert api(server, "/api/search?token=forgotten")[0] == 404
    for bad in ("q=", "q=red&page=x", "q=red&page=50", f"token={token}&page=-1"):
        assert api(server, f"/api/search?{bad}")[0] == 400, bad


def test_thumbnail_is_a_small_jpeg_of_the_image(server, data):
    from PIL import Image

    for row, size in ((1, (320, 200)), (2, (48, 32))):
        status, headers, body = call(server, "GET", f"/media/a/{row}.jpg")
        assert (status, headers["content-type"]) == (200, "image/jpeg")
        im = Image.open(io.BytesIO(body))
        assert (im.format, im.size) == ("JPEG", size)
        mean = np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3).mean(0)
        assert np.abs(mean - colour(row)).max() < 8, (mean, colour(row))


def test_audio_window_is_a_wav_of_the_window(server, data):
    for row in (4, N + 1):
        ref = data.pairs[row].b
        status, headers, body = call(server, "GET", f"/media/b/{row}.wav")
        assert (status, headers["content-type"]) == (200, "audio/wav")
        with wave.open(io.BytesIO(body)) as w:
            rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert abs(len(samples) / rate - (ref.end - ref.start)) < 0.01
        tone = 300.0 + 90 * int(ref.path.removeprefix("wav/tone").removesuffix(".wav"))
        assert abs(media.peak_frequency(samples.astype(np.float64), rate) - tone) < 5
    for wrong in ("/media/a/4.wav", "/media/b/4.jpg", f"/media/a/{N + 500}.jpg"):
        assert call(server, "GET", wrong)[0] == 404, wrong


def test_upload_an_image_a_wav_and_a_video_by_frame_or_audio(server, data, tmp_path):
    status, res = upload(server, "shot.png", png_of(data, 3))
    assert status == 200 and res["query"] == "shot.png" and "(side a)" in res["through"], res
    top = res["lists"][0]["hits"][0]
    assert top["row"] == 3 and top["score"] > 0.999, top
    status, res = upload(server, "q.wav", media.write_tone(tmp_path / "q.wav", 2.0, 480.0).read_bytes())
    assert status == 200 and "test-audio (side b)" in res["through"], res
    clip = media.write_video(tmp_path / "clip.mp4", 2.0).read_bytes()
    for pick, side in (("frame", "a"), ("audio", "b")):
        status, res = upload(server, "clip.mp4", clip, pick)
        assert status == 200, res
        assert res["query"] == f"clip.mp4 ({pick})" and f"(side {side})" in res["through"]
        assert [len(lst["hits"]) for lst in res["lists"]] == [10, 10]
    status, res = upload(server, "clip.mp4", clip)
    assert status == 400 and "frame or its audio" in res["error"]
    # a chunked body (no Content-Length) is taken as well
    png = png_of(data, 3)
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (png[:40], png[40:])) + b"0\r\n\r\n"
    status, _, got = raw(server, post_head(server, "shot.png", "Transfer-Encoding: chunked") + body)
    assert status == 200 and json.loads(got)["lists"][0]["hits"][0]["row"] == 3


# -- nothing from the disk that a client names

TRAVERSALS = [
    b"/../../../../etc/passwd",
    b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    b"/..\\..\\..\\etc\\passwd",
    b"/%5c..%5c..%5cetc%5cpasswd",
    b"/app.js%00",
    b"/app.js%00.png",
    b"/media/a/0.jpg%00",
    b"/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    b"/%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    b"//etc/passwd",
    b"/media/a/1.jpg/../..",
    b"/media/a/../../manifest.jsonl",
    b"/app.js/../",
    b"/./app.js/..",
    b"/\xef\xbc\x8e\xef\xbc\x8e/\xef\xbc\x8e\xef\xbc\x8e/etc/passwd",  # fullwidth full stops, as UTF-8
    b"/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/etc/passwd",
    b"/media/a/\xef\xbc\x91.jpg",  # a fullwidth digit
    b"http://evil/etc/passwd",
    b"http://127.0.0.1/manifest.jsonl",
    b"/manifest.jsonl",
    b"/s.zarr/zarr.json",
    b"/index.html",
    b"/page/app.js",
    b"/media/c/0.jpg",
    b"/media/a/0.png",
    b"/media/a/-1.jpg",
]


def test_paths_outside_the_routes_are_404_however_encoded(server, data):
    own = [str(data.manifest), "/" + data.pairs[0].a.path, str(data.root / data.pairs[0].a.path)]
    secret = data.manifest.read_bytes().split(b"\n")[1]
    got = {}
    for target in TRAVERSALS + [t.encode() for t in own]:
        status, _, body = raw(server, request(server, target))
        got[target] = status
        assert b"root:" not in body and secret not in body and b"\x89PNG" not in body, target
    assert {t: s for t, s in got.items() if s != 404} == {}


def test_a_control_character_in_a_request_is_logged_escaped(server):
    status, _, _ = raw(server, request(server, b"/\x1b[2J\x1b]0;owned\x07\xff"))
    assert status == 404
    log = server.log.read_bytes()
    assert rb"404 'GET /\x1b[2J\x1b]0;owned\x07\xff HTTP/1.1' from 127.0.0.1" in log, log[-2000:]
    assert re.search(rb"[\x00-\x09\x0b-\x1f\x7f]|\xff|\xc3\xbf", log) is None, log[-2000:]


# -- who may ask


def test_only_the_bound_address_is_answered_and_uploads_only_from_its_page(server, data):
    p = server.port
    for host in (
        f"evil.example:{p}",
        "evil.example",
        f"127.0.0.1.evil.example:{p}",
        f"127.0.0.1:{p + 1}",
        "",
    ):
        status, _, body = raw(server, request(server, b"/api/info", host=host.encode()))
        assert status == 403 and "only to the address" in json.loads(body)["error"], host
    assert call(server, "GET", "/api/info", headers={"Host": f"localhost:{p}"})[0] == 200
    png = png_of(data, 3)
    for origin in ("http://evil.example", f"http://evil.example:{p}", "null", f"https://127.0.0.1:{p}"):
        head = post_head(server, "x.png", f"Content-Length: {len(png)}\r\nOrigin: {origin}")
        status, _, body = raw(server, head)  # refused before the body is sent
        assert status == 403 and "own page" in json.loads(body)["error"], origin
    status, res = upload(server, "x.png", png, headers={"Origin": f"http://127.0.0.1:{p}"})
    assert status == 200 and res["lists"][0]["hits"][0]["row"] == 3


def test_uploads_are_refused_by_size_kind_and_pixels(server, tmp_path):
    # a Content-Length over the 1 MB limit is refused before a byte of the body is sent
    status, _, body = raw(server, post_head(server, "big.png", f"Content-Length: {5 << 20}"), timeout=10)
    assert status == 413 and "--max-upload-mb" in json.loads(body)["error"]
    # chunked: four chunks of 256 KiB are exactly the limit; the byte after them is refused ...
    quarter = b"40000\r\n" + b"\0" * 0x40000 + b"\r\n"
    head = post_head(server, "big.png", "Transfer-Encoding: chunked")
    status, _, body = raw(server, head + quarter * 4 + b"1\r\n\0", timeout=10)
    assert status == 413 and "larger than the server's limit of 1 MB" in json.loads(body)["error"]
    # ... while the four alone are taken (and are no image: 422, named as the client named it)
    status, _, body = raw(server, head + quarter * 4 + b"0\r\n\r\n")
    error = json.loads(body)["error"]
    assert status == 422 and error.startswith("cannot read big.png: unreadable image"), error
    assert "ee-serve-" not in error and "q-" not in error
    for name in ("x.svg", "x.html", "x.SVG", "noext", "x.png.html"):
        status, _, body = raw(server, post_head(server, name, "Content-Length: 100"))
        assert status == 415 and "cannot search by" in json.loads(body)["error"], name
    for side, says in ((20000, "exceeds limit of"), (10000, "the limit is")):  # Pillow's refusal, and ours
        status, res = upload(
            server, "bomb.png", media.write_png_bomb(tmp_path / f"{side}.png", side).read_bytes()
        )
        assert status == 422 and says in res["error"] and "pixels" in res["error"], res


def test_expect_100_continue_is_answered_after_the_upload_checks(server, data):
    """curl asks before sending a body over 1 MB: a refused upload is refused then, never told to go on."""
    expect = "Expect: 100-continue\r\n"
    for name, length, status_wanted in (("big.png", 5 << 20, 413), ("x.svg", 100, 415)):
        status, _, _ = raw(server, post_head(server, name, expect + f"Content-Length: {length}"), timeout=10)
        assert status == status_wanted, name
    origin = b"Origin: http://evil.example\r\nContent-Length: 10\r\n"
    foreign = request(server, b"/api/upload?name=x.png", b"POST", extra=origin + expect.encode())
    assert raw(server, foreign)[0] == 403
    png = png_of(data, 0)
    head = post_head(server, "ok.png", expect + f"Content-Length: {len(png)}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        assert s.recv(1 << 16).startswith(b"HTTP/1.1 100")
        s.sendall(png)
        got = b""
        while piece := s.recv(1 << 16):
            got += piece
    assert got.split(b" ", 2)[1] == b"200", got[:200]


def test_a_client_that_sends_the_whole_refused_upload_still_reads_the_refusal(server):
    """A browser sends the whole body before it reads the answer: the 413 must reach it, not a
    connection reset from a socket closed with unread data."""
    body = b"\0" * (5 << 20)
    head = post_head(server, "big.wav", f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head + body)
        got = b""
        while piece := s.recv(1 << 16):
            got += piece
    assert got.split(b" ", 2)[1] == b"413", got[:200]
    assert "--max-upload-mb" in json.loads(got.partition(b"\r\n\r\n")[2])["error"]


def test_audio_is_decoded_for_at_most_30_s(tmp_path):
    from embedeverything.renditions import MAX_AUDIO_S, window
    from embedeverything.renditions import upload as decode_upload

    long = media.write_tone(tmp_path / "long.wav", 40.0, 440.0, sample_rate=8000)
    assert MAX_AUDIO_S == 30.0
    assert abs(decode_upload(str(long), "audio", None).duration - 30.0) < 0.01
    short = media.write_tone(tmp_path / "short.wav", 2.0)
    assert abs(decode_upload(str(short), "audio", None).duration - 2.0) < 0.01
    for start, end, seconds in ((1.0, 39.0, 30.0), (5.0, None, 30.0), (35.0, None, 5.0)):
        got = window({"kind": "audio", "path": str(long), "start": start, "end": end}, None)
        with wave.open(io.BytesIO(got)) as w:
            assert abs(w.getnframes() / w.getframerate() - seconds) < 0.01, (start, end)


# -- only re-encoded media; the manifest's words as text


def test_manifest_media_are_only_served_re_encoded(server, data):
    for id_ in ("evil-0", "evil-1"):
        status, headers, body = call(server, "GET", f"/media/a/{data.row(id_)}.jpg")
        assert status == 404 and headers["content-type"].startswith("application/json"), id_
        assert b"<script" not in body and b"<svg" not in body and b"<html" not in body
        assert "unreadable image" in json.loads(body)["error"]
    status, res = upload(server, "five.png", png_of(data, LABELLED))
    top = res["lists"][0]["hits"][0]
    assert (top["row"], top["label"]) == (LABELLED, EVIL_LABEL)


def test_the_page_inserts_nothing_as_html():
    js = (PAGE / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in js, sink
    html = (PAGE / "index.html").read_text()
    # under default-src 'self' no inline script, style or handler runs: the page must need none
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/app.js">']
    assert "<style" not in html and "style=" not in html and re.search(r"\son\w+\s*=", html) is None


# -- two decodes at a time, each under a time limit


def decoder_processes(pid: int) -> int:
    """How many decoder processes ``pid`` has started (its spawned children but the resource tracker)."""
    n = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            n += ppid == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    return n


def test_two_decodes_at_a_time_and_a_hung_one_times_out(data, tmp_path):
    srv = Server([str(data.adapter), "--decode-timeout", "3"], tmp_path, {HANG_ON_ENV: HANG})
    try:
        hung = f"/media/a/{data.row('p007')}.jpg"
        answers: list[tuple[int, str, float]] = []

        def ask() -> None:
            t = time.monotonic()
            status, _, body = call(srv, "GET", hung)
            answers.append((status, json.loads(body)["error"], time.monotonic() - t))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # a slot's decoder starts once the slot is taken
        while decoder_processes(srv.proc.pid) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        t = time.monotonic()
        status, _, body = call(srv, "GET", "/media/a/0.jpg")
        assert status == 503 and "busy" in json.loads(body)["error"]
        assert time.monotonic() - t < 2.0  # answered at once, not queued behind a decode
        assert all(t.is_alive() for t in threads)
        for t in threads:
            t.join(timeout=60)
        assert [(s, "timed out" in e, d >= 3) for s, e, d in answers] == [(404, True, True)] * 2, answers
        assert call(srv, "GET", "/media/a/0.jpg")[0] == 200
        assert call(srv, "GET", "/media/b/0.wav")[0] == 200
    finally:
        srv.stop()


# -- no text tower; listening beyond loopback


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    """The adapter whose image side declares no space, served on every interface."""
    srv = Server([str(data.plain), "--host", "0.0.0.0"], tmp_path_factory.mktemp("plain"))
    yield srv
    srv.stop()


def test_without_a_text_tower_the_text_box_is_off(plain, data):
    status, info = api(plain, "/api/info")
    assert status == 200 and info["text"]["enabled"] is False and info["text"]["how"] == ""
    assert "text encoder" in info["text"]["reason"] and "test-image (None)" in info["text"]["reason"]
    status, res = api(plain, "/api/search?q=red")
    assert status == 400 and res["error"].startswith("text search is off: "), res
    status, res = upload(plain, "shot.png", png_of(data, 3))
    assert status == 200 and res["lists"][0]["hits"][0]["row"] == 3


def test_listening_on_every_interface_warns_and_still_checks_host(plain):
    assert plain.first_line.startswith(f"serving {plain.first_line.split()[1]} at http://0.0.0.0:")
    warning = (
        f"warning: listening on 0.0.0.0: anyone who can reach port {plain.port} can read the indexed media "
        "and make this server decode files they upload\n"
    )
    assert warning in plain.log.read_text()
    assert api(plain, "/api/info", headers={"Host": f"10.1.2.3:{plain.port}"})[0] == 200  # an IP literal
    assert api(plain, "/api/info", headers={"Host": f"evil.example:{plain.port}"})[0] == 403


def test_cli_mistakes_are_one_line(data, tmp_path, capsys, monkeypatch):
    import tempfile

    adapter = str(data.adapter)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [
            (["--index", str(tmp_path / "none")], f"run `ee index {adapter}` first"),
            (["--port", port], "pick another --port, or --port 0"),
            (["--port", "70000"], "--port must be between 0 and 65535"),
            (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
            (["--decode-timeout", "-1"], "--decode-timeout must be > 0"),
        ]
        for args, says in cases:
            assert ee_main("serve", adapter, *args) == 2, args
            out, err = capsys.readouterr()
            assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert ee_main("serve", str(tmp_path / "none.safetensors")) == 2
    assert "no adapter file" in capsys.readouterr().err
    assert list(tmp_path.glob("ee-serve-*")) == []  # a server that did not start leaves no folder
    assert not (tmp_path / "none").exists()  # nor an empty index folder where it looked for one


# -- while it runs


def test_rows_indexed_while_it_runs_are_found(server, data):
    new = make_pairs(data.root, 100, 5)
    data.pairs = data.pairs + new
    data.embed()
    assert ee_main("index", str(data.adapter)) == 0
    status, info = api(server, "/api/info")
    assert [(s["indexed"], s["embedded"]) for s in info["sides"].values()] == [(N + 5, N + 5), (N + 7, N + 7)]
    status, res = api(server, "/api/search?q=red")
    assert [lst["rows"] for lst in res["lists"]] == [N + 5, N + 7]
    row = data.row(new[2].id)
    status, res = upload(server, "new.png", png_of(data, row))
    top = res["lists"][0]["hits"][0]
    assert (top["row"], top["id"], top["pair"]["a"]["missing"]) == (row, new[2].id, False), top
    assert call(server, "GET", top["pair"]["a"]["src"])[0] == 200
    assert call(server, "GET", top["pair"]["b"]["src"])[0] == 200


def test_uploads_leave_no_file_and_their_folder_goes_with_the_server(server):
    folders = list((server.folder / "tmp").glob("ee-serve-*"))
    assert len(folders) == 1 and list(folders[0].iterdir()) == []
    assert server.stop() == 0
    assert not folders[0].exists()
    err = server.log.read_text()
    assert err.endswith("stopped\n") and "Traceback" not in err and "warning" not in err, err[-3000:]
