"""Starting and stopping ``ee serve``: the engine, the listening socket, and a clean end on Ctrl-C."""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engine import Engine
from .http import SearchServer
from .sandbox import TIMEOUT_S, Sandbox

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 50.0


def exposed(host: str) -> bool:
    """Whether others than this machine's own users can reach ``host``."""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host != "localhost"


def serve(
    adapter: str | os.PathLike[str],
    store: str | None = None,
    index: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    decode_timeout: float = TIMEOUT_S,
    on_ready: Callable[[SearchServer], None] | None = None,
) -> None:
    """Serve the search page until Ctrl-C or SIGTERM, the two usual ways to stop a server: either ends it
    cleanly (uploads folder removed, decoder processes ended) and the command exits 0."""
    server = SearchServer(None, host, port, int(max_upload_mb * 2**20))
    try:
        server.engine = Engine(Path(adapter), store, index, manifest, Sandbox(timeout=decode_timeout))
    except BaseException:
        server.server_close()
        raise
    engine = server.engine
    previous = _stop_on_sigterm()
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
        engine.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """SIGTERM ends the server as Ctrl-C does (in the main thread only, where signals are delivered)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)
