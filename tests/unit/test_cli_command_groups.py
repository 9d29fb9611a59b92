"""Command groups from other distributions: ``bridge sandbox`` comes from the sandbox
package's entry point, and says what to install when that package is absent."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
import typer
from typer.testing import CliRunner

from bridge.app import cli


def test_the_sandbox_registers_its_group() -> None:
    (entry,) = [e for e in entry_points(group=cli.COMMAND_GROUPS) if e.name == "sandbox"]
    assert entry.value == "bridge_sandbox.commands:app"
    result = CliRunner().invoke(cli.app, ["sandbox", "--help"])
    assert result.exit_code == 0, result.output
    assert "salesforce" in result.output
    assert "servicenow" in result.output


def _bare_app(found: list[EntryPoint]) -> typer.Typer:
    bare = typer.Typer(pretty_exceptions_enable=False, add_completion=False)

    @bare.command("version")
    def version() -> None:  # a second command keeps typer from flattening the app
        typer.echo("bridge")

    cli.add_command_groups(bare, found)
    return bare


@pytest.mark.parametrize(
    "argv",
    [
        ["sandbox"],
        ["sandbox", "--help"],
        ["sandbox", "salesforce", "--port", "8443"],
        ["sandbox", "servicenow", "--help"],
    ],
)
def test_without_the_sandbox_the_command_says_what_to_install(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "app", _bare_app([]))
    assert cli.main(argv) == cli.EXIT_ERROR
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "bridge sandbox: not installed: install omni-awa-sandbox" in err
    assert "uv sync" in err


def test_the_root_help_still_lists_a_missing_group() -> None:
    result = CliRunner().invoke(_bare_app([]), ["--help"])
    assert result.exit_code == 0
    assert "sandbox" in result.output
    assert "not installed" in result.output


def test_a_group_that_cannot_load_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint("sandbox", "bridge_sandbox.no_such_module:app", cli.COMMAND_GROUPS)
    monkeypatch.setattr(cli, "app", _bare_app([broken]))
    assert cli.main(["sandbox", "salesforce"]) == cli.EXIT_ERROR
    err = " ".join(capsys.readouterr().err.split())
    assert "bridge sandbox: cannot load bridge_sandbox.no_such_module:app" in err
