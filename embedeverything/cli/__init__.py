"""The ``ee`` command line: thin typer commands, each calling one library function.

Exit status: 0 all done; 1 the run finished but some rows failed; 2 a user's mistake, one line on stderr,
nothing done (``EE_DEBUG=1`` shows the traceback); 3 an internal error, a bug in embedeverything; 4 a write
found no space (full disk, quota, file-size limit), one line naming what and where, nothing half written;
130 Ctrl-C, finished work kept.
Commands live in one module each and import their heavy dependencies inside the function, so that
``ee --help`` and ``ee encoders`` never import torch.
"""

from __future__ import annotations

import os
import sys

from ..errors import DISK_FULL_EXIT, EEError, EEWarning, disk_full, is_disk_full

# Each module adds its commands to ``app`` (or ``store_app``, both in .app) when imported.
from . import embed as _embed  # noqa: F401
from . import encoders as _encoders  # noqa: F401
from . import evaluate as _evaluate  # noqa: F401
from . import ingest as _ingest  # noqa: F401
from . import pair as _pair  # noqa: F401
from . import search as _search  # noqa: F401
from . import serve as _serve  # noqa: F401
from . import store as _store  # noqa: F401
from . import train as _train  # noqa: F401
from . import weights as _weights  # noqa: F401
from .app import app
from .output import old_json_usage

INTERNAL_ERROR_EXIT = 3


def _click_modules() -> list[object]:
    """Typer releases vendor click (``typer._click``); older ones use click itself. Catch both."""
    import importlib

    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pass
    return mods


def _exc(name: str) -> tuple[type[BaseException], ...]:
    return tuple(getattr(m, name) for m in _click_modules() if hasattr(m, name))


def _one_line_warnings() -> None:
    """ee's own warnings (``EEWarning``) as ``warning: message`` lines, each said once per run (not once
    per call site); other libraries' (Pillow, torch, zarr, numcodecs, dask) left out, here and in every
    Python process this one starts (decoder and Dask workers inherit ``PYTHONWARNINGS``): they speak of
    those libraries' internals, not of anything the person running ee can change. ``EE_DEBUG=1`` shows
    them all, as Python would."""
    import warnings

    said: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        text = str(message)
        if text not in said:
            said.add(text)
            print(f"warning: {text}", file=sys.stderr)

    warnings.showwarning = show
    warnings.simplefilter("ignore")
    warnings.simplefilter("always", EEWarning)  # put in front of the one above: ours pass
    os.environ["PYTHONWARNINGS"] = "ignore"


def _unplaced_disk_full(e: Exception) -> str:
    name = getattr(e, "filename", None)
    if name:
        return str(disk_full(e, os.path.basename(name), os.path.dirname(os.path.abspath(name))))
    reason = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else "no space left on the device"
    return (
        f"a write failed: {reason}; free some space and run the same command again (EE_DEBUG=1 shows where)"
    )


def main(argv: list[str] | None = None) -> None:
    debug = bool(os.environ.get("EE_DEBUG"))
    if not debug:
        _one_line_warnings()
    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]
    hint = old_json_usage(sys.argv[1:] if argv is None else argv)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        raise SystemExit(2)
    try:
        rv = app(args=argv, prog_name="ee", standalone_mode=False)
    except _exc("Exit") as e:
        raise SystemExit(e.exit_code) from None  # type: ignore[attr-defined]
    except _exc("Abort"):
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to go on", file=sys.stderr)
        raise SystemExit(130) from None
    except _exc("UsageError") as e:
        if debug:
            raise
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        raise SystemExit(2) from None
    except _exc("ClickException") as e:
        if debug:
            raise
        print(f"error: {e.format_message()}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except EEError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        if debug:
            raise
        if is_disk_full(e):  # a write outside the guarded ones (files.atomic_path, the store)
            print(f"error: {_unplaced_disk_full(e)}", file=sys.stderr)
            raise SystemExit(DISK_FULL_EXIT) from None
        print(
            f"internal error: {type(e).__name__}: {e} (a bug in embedeverything: please report it on the "
            "project's issue tracker with the traceback that EE_DEBUG=1 prints)",
            file=sys.stderr,
        )
        raise SystemExit(INTERNAL_ERROR_EXIT) from None
    raise SystemExit(rv if isinstance(rv, int) else 0)
