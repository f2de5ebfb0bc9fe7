"""Pretrained weight files: where they live, how to fetch them, and whether a copy is intact.

A plugin describes each file it can use as a :class:`WeightFile`: a name, the upstream URL, the path in
the cache where the plugin looks for it, and a reference hash that ships WITH THE PLUGIN (a hash taken
after downloading would prove nothing). ``ee weights fetch`` downloads on an online machine so that the
cache can be copied to an offline one; ``ee weights verify`` says what is present and intact there.

No torch here: ``ee weights list`` must stay as light as ``ee encoders``. Network access is attempted only
after a cheap reachability probe with a short timeout, so an offline machine fails in milliseconds with a
message that says how to provide the files, never after a long hang.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import UserError
from .files import atomic_path, file_digest

#: seconds to wait for a TCP connection before declaring the network unreachable
PROBE_TIMEOUT = 3.0
#: seconds of silence on an open download before giving up
DOWNLOAD_TIMEOUT = 60.0

State = Literal["ok", "unverified", "missing", "corrupt"]


@dataclass(frozen=True)
class WeightFile:
    """One weights file a plugin can load.

    ``sha256`` is the full reference digest when it is known; ``sha256_prefix`` is the weaker check used
    where upstream only publishes the first hex digits (torch.hub's ``name-<8 hex>.pth`` convention).
    With neither, a present file is reported as "unverified", never as intact.
    """

    name: str
    url: str
    path: Path
    sha256: str | None = None
    sha256_prefix: str | None = None
    note: str = ""

    @property
    def reference(self) -> str:
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        return "none"

    def matches(self, hexdigest: str) -> bool | None:
        """True/False against the shipped reference; None when there is none to compare with."""
        if self.sha256:
            return hexdigest == self.sha256.lower()
        if self.sha256_prefix:
            return hexdigest.startswith(self.sha256_prefix.lower())
        return None


@dataclass(frozen=True)
class FileStatus:
    file: WeightFile
    state: State
    sha256: str | None = None  # the digest actually found, when the file is present

    def describe(self) -> str:
        f = self.file
        if self.state == "ok":
            return f"ok: {f.path} matches {f.reference}"
        if self.state == "unverified":
            return f"present, unverified (no reference hash ships for it): {f.path} sha256:{self.sha256}"
        if self.state == "missing":
            return f"missing: {f.path}"
        return f"CORRUPT: {f.path} has sha256:{self.sha256}, expected {f.reference}"


def verify(wf: WeightFile) -> FileStatus:
    """Whether ``wf`` is present at its path and equal to its shipped reference."""
    if not wf.path.is_file():
        return FileStatus(wf, "missing")
    digest = file_digest(wf.path)
    ok = wf.matches(digest)
    if ok is None:
        return FileStatus(wf, "unverified", digest)
    return FileStatus(wf, "ok" if ok else "corrupt", digest)


def check_local_file(path: str | os.PathLike[str], wf: WeightFile | None, what: str) -> str:
    """Hash a weights file the loader is about to use; refuse it when it contradicts the reference.

    Returns the hex digest (for the encoder's identity)."""
    digest = file_digest(path)
    if wf is not None and wf.matches(digest) is False:
        raise UserError(
            f"{what} {path} is corrupt or another file: sha256 {digest[:16]}..., expected {wf.reference}; "
            f"delete it and run `ee weights fetch`, or copy an intact file there"
        )
    return digest


# ---- network ---------------------------------------------------------------------------------------


def offline_forced() -> bool:
    """The user said: never touch the network (``EE_OFFLINE=1``, or the HF hub's own switch)."""
    return any(os.environ.get(v, "").strip() not in ("", "0") for v in ("EE_OFFLINE", "HF_HUB_OFFLINE"))


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """A fast yes/no on whether ``url``'s host accepts a TCP connection (DNS included)."""
    if offline_forced():
        return False
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch(
    wf: WeightFile,
    *,
    force: bool = False,
    timeout: float = DOWNLOAD_TIMEOUT,
    progress: Callable[[int, int | None], None] | None = None,
) -> FileStatus:
    """Download ``wf`` into its cache path unless an intact copy is there already.

    The download goes to a temporary file beside the target, is hashed while it streams, and is renamed
    into place only when it matches the shipped reference: a cut or corrupted download never looks
    like a cached file.
    """
    if not force:
        status = verify(wf)
        if status.state in ("ok", "unverified"):
            return status
    if not reachable(wf.url):
        raise UserError(
            f"cannot reach {wf.url} (offline?): fetch {wf.name} on a machine with internet and copy it "
            f"to {wf.path}"
        )
    h = hashlib.sha256()
    try:
        with atomic_path(wf.path) as tmp, open(tmp, "wb") as out:
            req = urllib.request.Request(wf.url, headers={"User-Agent": "embedeverything"})
            with urllib.request.urlopen(req, timeout=timeout) as src:
                total = src.headers.get("Content-Length")
                total_n = int(total) if total and total.isdigit() else None
                done = 0
                while block := src.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total_n)
            if total_n is not None and done != total_n:
                raise UserError(f"download of {wf.url} was cut short: {done} of {total_n} bytes")
            digest = h.hexdigest()
            if wf.matches(digest) is False:
                raise UserError(
                    f"downloaded {wf.name} from {wf.url} does not match its reference: sha256 {digest}, "
                    f"expected {wf.reference}; nothing was written to {wf.path}"
                )
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise UserError(
            f"download of {wf.name} from {wf.url} failed ({e}); copy the file to {wf.path} by hand"
        ) from None
    return FileStatus(wf, "ok" if wf.matches(digest) else "unverified", digest)


# ---- the usual cache folders, found without importing the libraries that own them -----------------


def xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def torch_hub_dir() -> Path:
    """Where ``torch.hub`` keeps downloads (``$TORCH_HOME/hub``), as torch computes it."""
    torch_home = os.environ.get("TORCH_HOME") or (xdg_cache() / "torch")
    return Path(torch_home).expanduser() / "hub"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub computes it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or (xdg_cache() / "huggingface")
    return Path(home).expanduser() / "hub"


def hf_cached_file(
    repo_id: str, filename: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """A file of a model repo already in the HF cache (the revision ``main`` points at), or None."""
    root = Path(cache_dir) if cache_dir else hf_hub_cache()
    repo = root / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    revisions = [ref.read_text().strip()] if ref.is_file() else []
    snapshots = repo / "snapshots"
    if not revisions and snapshots.is_dir():
        revisions = sorted(p.name for p in snapshots.iterdir())
    for rev in revisions:
        candidate = snapshots / rev / filename
        if candidate.is_file():
            return candidate
    return None
