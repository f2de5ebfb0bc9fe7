"""Headless Chromium for tests, driven over the DevTools Protocol on a pipe: no websocket, no new dependency.

Chromium started with ``--remote-debugging-pipe`` reads commands from its fd 3 and writes answers and
events to its fd 4, each one JSON message ending in a NUL byte. One page (tab) at a time is enough for
our tests: ``open`` replaces it, and ``evaluate`` / ``wait_for`` / ``screenshot`` act on it.

    with Browser(chromium) as b:
        b.open(url)
        b.wait_for("document.images.length > 0")
        widths = b.evaluate("[...document.images].map(i => i.naturalWidth)")
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Debian's chromium (`apt-get install chromium`, which `scripts/setup.sh --tests` does as root "
    "on Debian) or point EE_CHROMIUM at a Chromium/Chrome executable"
)


class BrowserError(RuntimeError):
    """Chromium failed to start, died, timed out, or the page threw: the message carries the evidence."""


def find_chromium() -> str | None:
    """EE_CHROMIUM if set (and executable), else the first Chromium/Chrome on PATH."""
    override = os.environ.get("EE_CHROMIUM")
    if override:
        return shutil.which(override)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def why_no_chromium() -> str:
    """What to tell someone whose machine has no usable Chromium."""
    override = os.environ.get("EE_CHROMIUM")
    if override:
        return f"EE_CHROMIUM={override!r} is not an executable; {INSTALL_HINT}"
    return f"none of {', '.join(CANDIDATES)} on PATH; {INSTALL_HINT}"


def _high_fd(fd: int) -> int:
    """The same pipe end at fd >= 10 (and close-on-exec), so that the spawn's dup2 onto 3 and 4 never
    lands on itself, which would leave close-on-exec set and the pipe shut in the child."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with a throw-away profile; use as a context manager."""

    def __init__(
        self, executable: str | None = None, width: int = 1280, height: int = 800, timeout: float = 30.0
    ) -> None:
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError(f"no chromium found: {INSTALL_HINT}")
        self.width, self.height, self.timeout = width, height, timeout
        #: console messages (level, text) and uncaught exceptions ("exception", text) of the open page
        self.console: list[tuple[str, str]] = []
        self._pid = 0
        self._profile = ""
        self._to_chrome = self._from_chrome = -1
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._target: str | None = None
        self._session: str | None = None

    # -- process -------------------------------------------------------------------------------------

    def start(self) -> Browser:
        """Launch Chromium and wait until it answers; BrowserError with its own output if it does not."""
        self._profile = tempfile.mkdtemp(prefix="ee-chromium-")
        try:
            self._spawn(self._args())
            self.send("Browser.getVersion", timeout=self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _args(self) -> list[str]:
        args = [
            str(self.executable),
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            # containers often give /dev/shm 64 MB, too little for Chromium's shared memory
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        return args

    def _spawn(self, args: list[str]) -> None:
        """Start Chromium in its own session (one process group to kill) with the pipe on its fds 3/4."""
        cmd_r, self._to_chrome = (_high_fd(fd) for fd in os.pipe())
        self._from_chrome, out_w = (_high_fd(fd) for fd in os.pipe())
        log = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
            (os.POSIX_SPAWN_DUP2, cmd_r, 3),
            (os.POSIX_SPAWN_DUP2, out_w, 4),
        ]
        try:
            self._pid = os.posix_spawn(args[0], args, dict(os.environ), file_actions=actions, setsid=True)
        except OSError as e:
            raise BrowserError(f"cannot start {args[0]}: {e}") from e
        finally:
            for fd in (cmd_r, out_w, log):
                os.close(fd)

    def close(self) -> None:
        """Stop Chromium and every process it started, and delete the profile."""
        if self._pid:
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=2)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and os.waitpid(self._pid, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGKILL)  # helpers (zygote, renderers) share its group
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0
        for fd in (self._to_chrome, self._from_chrome):
            if fd >= 0:
                os.close(fd)
        self._to_chrome = self._from_chrome = -1
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = ""

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _log_path(self) -> str:
        return os.path.join(self._profile, "chromium.log")

    def _stderr_tail(self, lines: int = 15) -> str:
        try:
            text = Path(self._log_path).read_text(errors="replace")
        except OSError:
            return "(no chromium output)"
        # a container has no D-Bus, and Chromium says so many times: noise next to the real reason
        tail = [line for line in text.splitlines() if line.strip() and "dbus" not in line][-lines:]
        return "\n".join(tail) or "(no chromium output)"

    def _fail(self, what: str) -> BrowserError:
        return BrowserError(f"{what}; chromium's output ends with:\n{self._stderr_tail()}")

    # -- protocol ------------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One DevTools command; its result, or BrowserError with the protocol's or Chromium's words."""
        if self._to_chrome < 0:
            raise BrowserError("the browser is not running")
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_chrome, data) :]
        except BrokenPipeError:
            raise self._fail(f"chromium exited before {method}") from None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") == msg["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')} {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._on_event(reply)

    def _read(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next message from Chromium, waiting at most until ``deadline``."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise self._fail(f"timed out waiting for {waiting_for}")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise self._fail(f"chromium exited while waiting for {waiting_for}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _on_event(self, event: dict[str, Any]) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append((params.get("type", "log"), text))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(("exception", details.get("exception", {}).get("description", str(details))))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(
                (entry.get("level", "info"), f"{entry.get('text', '')} {entry.get('url', '')}")
            )
        else:
            self._events.append(event)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first event ``method`` of the open page since the last ``open`` (or wait), waiting for it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method and event.get("sessionId") == self._session:
                    del self._events[: i + 1]
                    return event.get("params", {})
            event = self._read(deadline, method)
            if "method" in event:
                self._on_event(event)

    # -- page ----------------------------------------------------------------------------------------

    def open(self, url: str, timeout: float | None = None) -> None:
        """Load ``url`` in a fresh tab (closing the previous one) and wait for its load event."""
        if self._target:
            self.send("Target.closeTarget", {"targetId": self._target})
        self._events.clear()
        self.console.clear()
        self._target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": self._target, "flatten": True})
        self._session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self._session)
        nav = self.send("Page.navigate", {"url": url}, session=self._session, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"cannot load {url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired", timeout=timeout)

    def evaluate(self, expression: str, await_promise: bool = True, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression in the open page (a promise is awaited)."""
        if not self._session:
            raise BrowserError("no page open: call open(url) first")
        params = {
            "expression": expression,
            "returnByValue": True,
            "awaitPromise": await_promise,
            "userGesture": True,
        }
        reply = self.send("Runtime.evaluate", params, session=self._session, timeout=timeout)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error in {expression!r}: {thrown}")
        return reply.get("result", {}).get("value")

    def wait_for(self, condition: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll the JavaScript ``condition`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(condition, timeout=max(deadline - time.monotonic(), 1.0))
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrowserError(
                    f"timed out after {timeout} s waiting for {condition!r} (last value {value!r}); "
                    f"page console: {self.console[-5:]}"
                )
            time.sleep(interval)

    def set_files(self, selector: str, paths: list[str | Path]) -> None:
        """Choose ``paths`` in the page's file input ``selector``, as a user does (input and change fire)."""
        found = self.send(
            "Runtime.evaluate",
            {"expression": f"document.querySelector({json.dumps(selector)})"},
            session=self._session,
        )
        object_id = found.get("result", {}).get("objectId")
        if not object_id:
            raise BrowserError(f"no element {selector!r} in the page")
        files = [str(Path(p).resolve()) for p in paths]
        self.send("DOM.setFileInputFiles", {"files": files, "objectId": object_id}, session=self._session)

    def screenshot(self, path: str | Path, width: int | None = None, height: int | None = None) -> Path:
        """A PNG of the open page's viewport at ``width`` x ``height`` CSS pixels (scale 1)."""
        metrics = {
            "width": width or self.width,
            "height": height or self.height,
            "deviceScaleFactor": 1,
            "mobile": False,
        }
        self.send("Emulation.setDeviceMetricsOverride", metrics, session=self._session)
        self.evaluate("document.fonts.ready.then(() => true)")
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=self._session)
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def static_server(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 from a thread; yields the base URL (ending in /)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
