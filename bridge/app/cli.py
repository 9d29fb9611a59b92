"""The ``bridge`` command line: one entry point for the daemon, one-off reconciliation
runs, audit queries, migrations, mapping checks and the sandbox.

Each command group lives in ``bridge/app/commands/<group>.py`` and exports ``app``; this
module only wires them together and turns errors into messages and exit codes. Groups that
other distributions provide (``bridge sandbox``: the ``omni-awa-sandbox`` package) are found
through the ``bridge.commands`` entry-point group, so the product imports none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated

import typer
from rich.console import Console

from bridge import __version__
from bridge.app.commands import config as config_cmd
from bridge.app.commands import console as console_cmd
from bridge.app.commands import db as db_cmd
from bridge.app.commands import ledger as ledger_cmd
from bridge.app.commands import mappings as mappings_cmd
from bridge.app.commands import reconcile as reconcile_cmd
from bridge.app.commands import run as run_cmd
from bridge.app.commands import salesforce as salesforce_cmd
from bridge.app.commands.common import state
from bridge.errors import BridgeError, ConfigError, NotFound

app = typer.Typer(
    name="bridge",
    help="Salesforce Omni-Channel ↔ ServiceNow AWA routing bridge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
app.add_typer(ledger_cmd.app, name="ledger")
app.add_typer(mappings_cmd.app, name="mappings")
app.add_typer(salesforce_cmd.app, name="salesforce")
app.command("console")(console_cmd.console)
app.command("reconcile")(reconcile_cmd.reconcile)
app.command("run")(run_cmd.run)

COMMAND_GROUPS = "bridge.commands"
# Groups the bridge knows by name though another distribution provides them: without it
# installed, the command says what to install instead of click's "No such command".
OPTIONAL_GROUPS = {
    "sandbox": (
        "omni-awa-sandbox",
        "the emulated Salesforce org and ServiceNow instance; in a checkout of the repository"
        " `uv sync` installs it with the dev environment",
    ),
}


def add_command_groups(target: typer.Typer, found: Iterable[EntryPoint]) -> list[str]:
    """Add each entry point's Typer app (or command) under its name, then a stand-in for
    every optional group none provided; the names added from entry points."""
    added: list[str] = []
    broken: list[str] = []
    for entry in found:
        try:
            command = entry.load()
        except ImportError as exc:
            _add_missing(target, entry.name, f"cannot load {entry.value}: {exc}")
            broken.append(entry.name)
            continue
        if isinstance(command, typer.Typer):
            target.add_typer(command, name=entry.name)
        else:
            target.command(entry.name)(command)
        added.append(entry.name)
    for name, (distribution, what) in OPTIONAL_GROUPS.items():
        if name not in added and name not in broken:
            _add_missing(target, name, f"not installed: install {distribution} ({what})")
    return added


def _add_missing(target: typer.Typer, name: str, reason: str) -> None:
    """A command that takes any arguments (``--help`` too) and fails with ``reason``."""

    @target.command(
        name,
        help=reason,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def missing() -> None:
        raise ConfigError(f"bridge {name}: {reason}")


add_command_groups(app, entry_points(group=COMMAND_GROUPS))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state.debug = debug


EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 70


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: errors become one clear message and an exit code."""
    err = Console(stderr=True)
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising.
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except NotFound as exc:
        if state.debug:
            err.print_exception()
        err.print(f"[red]not found:[/red] {exc.message}", highlight=False)
        return EXIT_NOT_FOUND
    except BridgeError as exc:
        if state.debug:
            err.print_exception()
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except typer.Abort:
        err.print("aborted")
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
        # Usage errors (no such option, a value not among the choices, ...): typer's own
        # (it vendors click) or click's, from a group another distribution adds.
        usage = _usage_error(exc)
        if usage is not None:
            return usage
        if state.debug:
            err.print_exception()
        else:
            err.print(
                f"[red]internal error:[/red] {type(exc).__name__}: {exc}\n"
                "run again with --debug for the traceback",
                highlight=False,
            )
        return EXIT_INTERNAL
    return code if isinstance(code, int) else 0


def _usage_error(exc: Exception) -> int | None:
    """Show a parser error as the parser would; its exit code (2: bad input), or None."""
    import click  # noqa: PLC0415 - only on the error path

    if isinstance(exc, click.exceptions.Abort):
        Console(stderr=True).print("aborted")
        return 1
    if isinstance(exc, typer.TyperException | click.exceptions.ClickException):
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            Console(stderr=True).print(f"error: {exc}", highlight=False, markup=False)
        return int(exc.exit_code)
    return None


if __name__ == "__main__":
    sys.exit(main())
