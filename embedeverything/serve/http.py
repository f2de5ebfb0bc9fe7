"""The HTTP side of ``ee serve``: a fixed set of routes, the serving rules, and nothing from the disk
that a client names.

Rules (docs/search.md says why each exists):

- a request whose Host header is not the address the server is bound to is refused (DNS rebinding: a
  web page on another name that resolves to 127.0.0.1 must not read the index); a POST from a page of
  another origin is refused;
- the page, its script and style are the package's own files, held in memory; media URLs carry only a
  side and a row (``/media/a/12.jpg``); any other path is a 404, logged with the request escaped;
- every response carries ``Content-Security-Policy: default-src 'self'`` and
  ``X-Content-Type-Options: nosniff``; what the page shows of the manifest it inserts as text;
- an upload is refused (413) above ``max_upload`` bytes, by its Content-Length or while it streams, is
  saved under a name the server chooses and deleted once decoded.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..errors import UserError
from .engine import Engine, upload_kind
from .sandbox import QueryError

PAGE_FILES = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/app.css": ("app.css", "text/css"),
}
MEDIA = re.compile(r"/media/([ab])/([0-9]{1,12})\.(jpg|wav)")
MEDIA_TYPES = {"jpg": "image/jpeg", "wav": "audio/wav"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
FOREIGN_HOST = "this server answers only to the address it listens on"
CHUNK = 1 << 16
LINGER_S = 2.0  # seconds a refused upload's remaining body is read and dropped before closing
LINGER_BYTES = 256 << 20  # ... and at most this much of it


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values the server answers to: the bound address and, bound to loopback, localhost;
    bound to every interface, any IP literal and this machine's own names (a rebinding attack needs a
    name it controls, never an IP literal)."""
    names = {host}
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        names |= {"localhost", "127.0.0.1", "[::1]"}
    if ip is not None and ip.is_unspecified:
        names |= {"localhost", socket.gethostname(), socket.getfqdn()}
    if ip is not None and ip.version == 6:
        names.add(f"[{host}]")
    return {f"{n}:{port}" for n in names} | ({n for n in names} if port == 80 else set())


def _is_ip_literal(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class SearchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: Engine | None, host: str, port: int, max_upload: int):
        """Listening from here on; ``engine`` may come later (bound first, a taken port is said before
        the encoders load)."""
        # before the socket: a failed bind calls server_close, which removes it
        self.uploads = tempfile.TemporaryDirectory(prefix="ee-serve-")
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host.strip("[]"), port), Handler)
        except socket.gaierror as e:
            raise UserError(
                f"cannot listen on {host}: not an address of this machine ({e.strerror})"
            ) from None
        except OSError as e:
            fix = (
                "pick another --port, or --port 0 for a free one"
                if e.errno in (errno.EADDRINUSE, errno.EACCES)
                else "give --host an address of this machine"
            )
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): {fix}") from None
        self.engine: Engine = engine  # type: ignore[assignment]
        self.max_upload = max_upload
        self.port = int(self.server_address[1])
        self.hosts = allowed_hosts(host, self.port)
        self.any_ip = ipaddress.ip_address(host).is_unspecified if _is_ip_literal(host) else False
        pkg = resources.files(__package__) / "page"
        self.page = {route: ((pkg / name).read_bytes(), ctype) for route, (name, ctype) in PAGE_FILES.items()}

    def server_close(self) -> None:
        super().server_close()
        self.uploads.cleanup()


class Handler(BaseHTTPRequestHandler):
    server: SearchServer
    protocol_version = "HTTP/1.1"
    # what a request line without a version (or one that cannot be parsed) is taken as: HTTP/0.9, the
    # base class's default, is answered without a status line or headers, the security headers too
    default_request_version = "HTTP/1.0"
    server_version = "ee-serve"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    # -- logging: only what went wrong, and the request as escaped text (it is the client's)
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:
            print(
                f"{code} {ascii(getattr(self, 'requestline', ''))} from {self.client_address[0]}",
                file=sys.stderr,
            )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        print(ascii(format % args), file=sys.stderr)

    # -- answering
    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._json(status, {"error": message})
        if close and self.command == "POST":
            self._linger()

    def _linger(self) -> None:
        """After refusing a body unread: stop sending, then read and drop what the client still sends,
        for a moment. A socket closed with unread data is reset, and a browser that sends its whole
        upload before reading would see that reset instead of the refusal."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S / 4)
            deadline, got = time.monotonic() + LINGER_S, 0
            while time.monotonic() < deadline and got < LINGER_BYTES:
                piece = self.connection.recv(CHUNK)
                if not piece:
                    break
                got += len(piece)
        except OSError:  # the client went away, or went quiet: either way the answer is out
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the HTTP layer refuses itself (a malformed request line, an unknown method, an overlong
        header) is answered as every other error: with the security headers, and the connection closed."""
        self._error(code, message or self.responses.get(code, ("error",))[0], close=True)

    def _host(self) -> str | None:
        """The request's Host header when it names this server (see :func:`allowed_hosts`), else None."""
        host = (self.headers.get("Host") or "").lower()
        if host in self.server.hosts or (self.server.any_ip and _is_ip_literal(host)):
            return host
        return None

    def _host_ok(self) -> bool:
        if self._host() is not None:
            return True
        self._error(403, FOREIGN_HOST, close=True)
        return False

    # -- routes
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path, _, query = self.path.partition("?")
        try:
            if path in self.server.page:
                body, ctype = self.server.page[path]
                self._send(200, body, f"{ctype}; charset=utf-8")
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon", cache="max-age=86400")
            elif path == "/api/info":
                self._json(200, {**self.server.engine.info(), "max_upload_bytes": self.server.max_upload})
            elif path == "/api/search":
                self._search(parse_qs(query, keep_blank_values=True))
            elif m := MEDIA.fullmatch(path):
                self._media(m.group(1), int(m.group(2)), m.group(3))
            else:
                self._error(404, "not found")
        except QueryError as e:
            self._error(e.status, str(e))
        except UserError as e:  # the index went stale under the server (another adapter, another store)
            self._error(409, str(e))
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True
        except Exception as e:
            self._internal(e)

    def do_POST(self) -> None:
        refused = self._refusal()
        if refused is not None:
            self._error(*refused, close=True)  # the body, unread, goes with the connection
            return
        try:
            self._upload(parse_qs(self.path.partition("?")[2], keep_blank_values=True))
        except QueryError as e:
            self._error(e.status, str(e), close=e.status in (400, 411, 413, 415, 507))
        except UserError as e:
            self._error(409, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:
            self._internal(e)

    def _internal(self, e: Exception) -> None:
        """A bug: one line for the page, one on stderr (the traceback with EE_DEBUG=1), and the server
        goes on serving."""
        if os.environ.get("EE_DEBUG"):
            traceback.print_exc()
        print(f"500 {ascii(self.requestline)}: {type(e).__name__}: {ascii(str(e))}", file=sys.stderr)
        self._error(500, f"internal error ({type(e).__name__}); the server's terminal says more", close=True)

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue`` (curl sends it for bodies over 1 MB): the upload's checks first, so a
        client told to go on is one whose upload will be read."""
        refused = self._refusal() if self.command == "POST" else None
        if refused is not None:
            self._error(*refused, close=True)
            return False
        return super().handle_expect_100()

    def _refusal(self) -> tuple[int, str] | None:
        """Why an upload is refused before a byte of it is read: (status, message), or None."""
        host = self._host()
        if host is None:
            return 403, FOREIGN_HOST
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}":
            return 403, "uploads are taken only from this server's own page"
        path, _, query = self.path.partition("?")
        if path != "/api/upload":
            return 404, "not found"
        try:
            upload_kind((parse_qs(query).get("name") or [""])[0])
        except QueryError as e:
            return e.status, str(e)
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length = self.headers.get("Content-Length")
        if chunked:
            return None
        if length is None or not length.isdigit():
            return 411, "an upload needs a Content-Length"
        if int(length) > self.server.max_upload:
            return 413, too_big(self.server.max_upload)
        return None

    def _search(self, args: dict[str, list[str]]) -> None:
        engine = self.server.engine
        page = _int(args, "page")
        if "token" in args:
            token = args["token"][0]
        elif "q" in args:
            token = engine.text_query(args["q"][0])
        else:
            raise QueryError(400, "give q (words) or token (an earlier query)")
        self._json(200, engine.search(token, page))

    def _media(self, side: str, row: int, ext: str) -> None:
        body = self.server.engine.media(side, row, ext)
        if body is None:
            self._error(404, "not found")
            return
        self._send(200, body, MEDIA_TYPES[ext], cache="private, max-age=300")

    def _upload(self, args: dict[str, list[str]]) -> None:
        name = (args.get("name") or [""])[0]
        ext = Path(name).suffix.lower()
        target = Path(self.server.uploads.name) / f"q-{secrets.token_hex(8)}{ext}"
        try:
            try:
                self._receive(target)
            except OSError as e:  # the disk under the uploads folder, full or failing
                raise QueryError(507, f"the server could not keep the upload ({e.strerror or e})") from None
            token = self.server.engine.file_query(target, name, (args.get("pick") or [None])[0])
        finally:
            target.unlink(missing_ok=True)
        self._json(200, self.server.engine.search(token, 0))

    def _receive(self, target: Path) -> None:
        """The request body into ``target``, refused (413) as soon as it grows past the limit."""
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length = 0 if chunked else int(self.headers["Content-Length"])  # checked by _refusal
        got = 0
        with open(target, "wb") as f:
            for piece in _chunks(self.rfile) if chunked else _sized(self.rfile, length):
                got += len(piece)
                if got > self.server.max_upload:
                    raise QueryError(413, too_big(self.server.max_upload))
                f.write(piece)


def too_big(limit: int) -> str:
    return f"the file is larger than the server's limit of {limit / 2**20:g} MB (--max-upload-mb)"


def _sized(rfile: Any, n: int) -> Any:
    while n > 0:
        piece = rfile.read(min(CHUNK, n))
        if not piece:
            raise QueryError(400, "the upload ended early")
        n -= len(piece)
        yield piece


def _chunks(rfile: Any) -> Any:
    """The pieces of a ``Transfer-Encoding: chunked`` body."""
    while True:
        line = rfile.readline(1024).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise QueryError(400, "a malformed chunked upload") from None
        if size == 0:
            while rfile.readline(1024).strip():  # trailers
                pass
            return
        yield from _sized(rfile, size)
        rfile.readline(8)


def _int(args: dict[str, list[str]], name: str) -> int:
    value = (args.get(name) or ["0"])[0]
    if not value.isdigit():
        raise QueryError(400, f"{name} must be a whole number")
    return int(value)
