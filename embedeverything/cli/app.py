"""The typer apps every command module adds its commands to.

Apart from ``cli/__init__`` (which imports the command modules and runs them), so that a command module
never imports the package that imports it. Shell completion (``ee --install-completion``) is typer's; the
shell is found by shellingham, a dependency of typer itself.
"""

from __future__ import annotations

import typer


def examples(*lines: str) -> str:
    """A command's ``--help`` epilog: whole command lines one can paste (a test parses each of them)."""
    return "Examples:\n" + "\n".join(lines)


app = typer.Typer(
    name="ee",
    help="embedeverything: co-embed any two modalities with frozen encoders and small contrastive heads.",
    no_args_is_help=True,
    add_completion=True,
    epilog=examples("ee pair --a clip --b vggish --data videos/", "ee encoders", "ee pair --help"),
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"embedeverything {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """embedeverything: co-embed any two modalities with frozen encoders and small contrastive heads."""


def encoder_names(incomplete: str) -> list[str]:
    """Shell completion of an encoder name: the installed encoders, read without loading any model."""
    from ..plugins import registry

    return [name for name in sorted(registry().encoders) if name.startswith(incomplete)]


store_app = typer.Typer(help="Inspect an embedding store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
