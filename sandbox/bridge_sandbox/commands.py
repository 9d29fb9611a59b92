"""`bridge sandbox ...`: the emulated Salesforce org and ServiceNow instance, alone or with a
bridge and generated traffic (the try-it-now demo). The product CLI finds ``app`` through
this package's ``bridge.commands`` entry point."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.app.commands.common import JsonFlag, print_json
from bridge_sandbox.salesforce.cli import salesforce
from bridge_sandbox.servicenow.cli import servicenow

app = typer.Typer(
    help="Emulated Salesforce org and ServiceNow instance over HTTPS on 127.0.0.1; "
    "without a subcommand: the demo (both emulators, the bridge, generated traffic).",
    invoke_without_command=True,
)
app.command("salesforce")(salesforce)
app.command("servicenow")(servicenow)


@app.callback()
def demo(
    ctx: typer.Context,
    conversations: Annotated[
        int, typer.Option("--conversations", "-n", min=1, help="Conversations to play.")
    ] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the scenario mix.")] = 1,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the ledger, logs and CA go (default: a temp dir)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the bridge daemon against both emulators with N generated conversations."""
    if ctx.invoked_subcommand is not None:
        return
    from bridge_sandbox.demo import run_demo  # noqa: PLC0415 - the demo pulls in everything

    err = Console(stderr=True)
    show = not as_json and err.is_terminal
    with Progress(
        TextColumn("[bold]conversations"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show,
    ) as bar:
        task = bar.add_task("conversations", total=conversations)
        if not show and not as_json:
            err.print(f"playing {conversations} conversations through the bridge ...")
        report = run_demo(
            conversations,
            seed=seed,
            directory=directory,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(report.as_dict())
    else:
        _print(report)
    raise typer.Exit(0 if report.ok else 1)


def _print(report: object) -> None:
    from bridge_sandbox.demo import DemoReport  # noqa: PLC0415

    assert isinstance(report, DemoReport)
    out = Console()
    scenarios = Table(title="Scenarios played", title_justify="left")
    scenarios.add_column("scenario")
    scenarios.add_column("conversations", justify="right")
    for name, count in sorted(report.scenarios.items()):
        scenarios.add_row(name, str(count))
    out.print(scenarios)

    summary = Table(title="What the ledger says", title_justify="left")
    summary.add_column("")
    summary.add_column("", justify="right")
    for state, count in sorted(report.outcomes.items()):
        summary.add_row(f"conversations {state}", str(count))
    for system, calls in report.api_calls.items():
        summary.add_row(f"API calls: {system}", str(calls))
    for key in ("p50", "p95", "p99"):
        summary.add_row(f"event → command done, {key}", f"{report.latency_ms.get(key, 0):.1f} ms")
    summary.add_row("drift found by a final reconciliation", str(report.drift))
    summary.add_row("elapsed", f"{report.elapsed_seconds:.1f} s")
    out.print(summary)
    for line in report.stuck + report.problems:
        out.print(f"[red]problem:[/red] {line}", highlight=False)
    verdict = (
        "[green]all conversations ended as expected[/green]"
        if report.ok
        else "[red]see above[/red]"
    )
    out.print(verdict)
    out.print(
        "Explore the ledger:\n"
        f"  export BRIDGE_LEDGER_URL={report.ledger_url}\n"
        "  uv run bridge ledger stats\n"
        "  uv run bridge ledger list --since 1h\n"
        "  uv run bridge ledger timeline <id from the list>\n"
        f"Logs: {report.directory / 'bridge.log'}",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
