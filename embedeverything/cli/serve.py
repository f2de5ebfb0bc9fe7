"""`ee serve`: a local web page that searches an index of `ee index` by words or by a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, examples
from .evaluate import require_adapter_file
from .search import IndexDir


@app.command(
    "serve",
    epilog=examples(
        "ee serve run/adapter.safetensors",
        "ee serve run/adapter.safetensors --port 0",
        "ee serve run/adapter.safetensors --index run/index --max-upload-mb 20",
    ),
)
def serve_cmd(
    adapter: Annotated[Path, typer.Argument(help="The adapter (.safetensors) whose index to search.")],
    store: Annotated[
        str | None, typer.Option(help="The indexed store (default: the one the adapter was trained on).")
    ] = None,
    index: IndexDir = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="Where the rows' media are named (default: manifest.jsonl beside the store)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback exposes the indexed media.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8765,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest file a query may upload, in MB (larger: 413).")
    ] = 50.0,
    decode_timeout: Annotated[
        float, typer.Option(help="Seconds one decode (upload, thumbnail, audio window) may take.")
    ] = 20.0,
) -> int:
    """Serve a search page: words through the text tower, or a dropped image, audio or video file.

    One result list per indexed side, each hit with its whole pair; Ctrl-C stops it.
    Needs the search extra: pip install 'embedeverything[search]'."""
    from ..errors import UserError

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {port}")
    if not max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be > 0, not {max_upload_mb}")
    if not decode_timeout > 0:
        raise UserError(f"--decode-timeout must be > 0, not {decode_timeout}")
    from ..search.state import lancedb

    lancedb()  # the missing extra is said before the adapter is read
    require_adapter_file(adapter)
    from ..serve.run import exposed, serve

    def ready(server: Any) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {adapter} at http://{shown}:{server.port}/ (Ctrl-C to stop)", flush=True)
        if exposed(host):
            print(
                f"warning: listening on {host}: anyone who can reach port {server.port} can read the "
                "indexed media and make this server decode files they upload",
                file=sys.stderr,
                flush=True,
            )

    serve(adapter, store, index, manifest, host, port, max_upload_mb, decode_timeout, on_ready=ready)
    return 0
