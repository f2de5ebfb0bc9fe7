"""`ee weights list | fetch | verify [ENCODER]`: pretrained files in the cache, for offline machines.

Fetch on a machine with internet, copy the cache folder to the offline one, verify there. Works for any
encoder whose plugin describes its files (it overrides ``Encoder.weight_files()``, returning
:class:`embedeverything.WeightFile`); others are said to manage their weights themselves.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .app import app, encoder_names, examples
from .output import JsonFlag, JsonOut, Output

weights_app = typer.Typer(
    help="List, fetch and verify encoders' pretrained weight files.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")

EncoderArg = Annotated[
    str | None,
    typer.Argument(
        help="Encoder name (see `ee encoders`); default: every encoder.", autocompletion=encoder_names
    ),
]
OptOption = Annotated[
    list[str] | None,
    typer.Option("--opt", "-o", help="Encoder option key=value (repeat): arch, cache_dir, ..."),
]


def _files(encoder: str | None, opt: list[str] | None) -> list[tuple[str, list[Any] | None]]:
    """(encoder name, its weight files, or None when its plugin does not describe them)."""
    from ..encoder import Encoder
    from ..errors import UserError
    from ..plugins import get_encoder, registry
    from .embed import parse_options

    options = parse_options(opt)
    if encoder is None and options:
        raise UserError("--opt needs an ENCODER: options belong to one encoder")
    names = [encoder] if encoder else sorted(registry().encoders)
    out = []
    for name in names:
        enc = get_encoder(name, **options)
        declared = type(enc).weight_files is not Encoder.weight_files
        out.append((name, list(enc.weight_files()) if declared else None))
    return out


@weights_app.command("list", epilog=examples("ee weights list", "ee weights list clip --json"))
def list_cmd(
    encoder: EncoderArg = None,
    opt: OptOption = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> int:
    """Each file an encoder loads: URL, cache path, the reference hash it must match, and whether present."""
    out = Output(as_json, json_out)
    rows = []
    for name, files in _files(encoder, opt):
        for f in files or []:
            rows.append(
                {
                    "encoder": name,
                    "file": f.name,
                    "url": f.url,
                    "path": str(f.path),
                    "reference": f.reference,
                    "present": f.path.is_file(),
                }
            )
        if files is None and encoder:
            out.note(f"{name}: its plugin manages its own weights (no weight_files())")
    out.json(rows)
    for r in rows:
        out.print(f"{r['encoder']}: {r['file']}\n  url:       {r['url']}\n  path:      {r['path']}")
        out.print(f"  reference: {r['reference']}\n  present:   {'yes' if r['present'] else 'no'}")
    return 0


@weights_app.command(
    "fetch", epilog=examples("ee weights fetch clip", "ee weights fetch clip --opt arch=ViT-L-14")
)
def fetch_cmd(
    encoder: EncoderArg = None,
    opt: OptOption = None,
    force: Annotated[bool, typer.Option(help="Download again even when an intact copy is there.")] = False,
) -> int:
    """Download an encoder's files into the cache, each checked against its shipped reference hash."""
    from ..weights import fetch

    for name, files in _files(encoder, opt):
        for f in files or []:
            print(f"{name}: fetching {f.name} -> {f.path}")
            status = fetch(f, force=force)
            print(f"  {status.describe()}")
    return 0


@weights_app.command("verify", epilog=examples("ee weights verify", "ee weights verify vggish"))
def verify_cmd(
    encoder: EncoderArg = None,
    opt: OptOption = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
) -> int:
    """Say which files are present and intact (equal to the reference hash shipped with the plugin).

    Exit status 1 when a file is missing or corrupt."""
    from ..weights import verify

    out = Output(as_json, json_out)
    bad = 0
    rows = []
    for name, files in _files(encoder, opt):
        for f in files or []:
            st = verify(f)
            bad += st.state in ("missing", "corrupt")
            rows.append({"encoder": name, "file": f.name, "state": st.state, "path": str(f.path)})
            out.print(f"{name}: {f.name}: {st.describe()}")
    out.json(rows)
    return 1 if bad else 0
