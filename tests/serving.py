"""`ee serve` as a real process for the tests: started on a free port, asked over HTTP, stopped as a user
stops it (Ctrl-C)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest


class Server:
    """``ee serve ARGS --port 0`` in its own process; stderr goes to a file the tests read."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str] | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.log = folder, folder / "stderr.log"
        self._err = open(self.log, "wb")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embedeverything", "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._err,
            env={**os.environ, **(env or {})},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        self.first_line = self.proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
        m = re.fullmatch(r"serving (\S+) at http://(\S+):([0-9]+)/ \(Ctrl-C to stop\)\n", self.first_line)
        if m is None:
            self.stop()
            pytest.fail(f"ee serve did not start: {self.first_line!r}\n{self.log.read_text()}")
        self.port = int(m.group(3))
        self.hostport = f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGINT (Ctrl-C), then SIGKILL if it does not end; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._err.close()
        return self.proc.returncode
