"""`bridge reconcile`: one-off reconciliation runs.

Dry run by default: prints the repair plan and changes nothing. ``--apply`` writes the
repairs and drives them through the dispatcher until they are done. Exit codes for cron:
0 nothing left to do, 1 findings remain unresolved (or a reconciler failed), 2 the run
could not start (settings, unknown reconciler name).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bridge.app.commands.common import (
    Column,
    JsonFlag,
    columns,
    parse_duration,
    parse_when,
    print_json,
    print_table,
)
from bridge.app.runtime import Runtime
from bridge.app.settings import load_settings
from bridge.ledger import SqlLedger
from bridge.ledger.rows import utcnow
from bridge.reconcile import Options, RunReport, no_progress, run_with, select_reconcilers
from bridge.reconcile import Progress as ProgressCallback
from bridge.reconcile.base import WITHIN_GRACE

FINDING_COLUMNS = columns("reconciler", "kind", "subject", "action", "status", "reason")
COUNT_COLUMNS = columns("reconciler", "kind", "status", Column("count", "findings"))


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[ProgressCallback]:
    """Rich progress bars on standard error, one per scan; nothing when not a terminal."""
    err = Console(stderr=True)
    if not enabled or not err.is_terminal:
        yield no_progress
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} records"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def advance(task: str, done: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total)
        bars.update(tasks[task], advance=done, total=total)

    with bars:
        yield advance


def reconcile(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", metavar="NAME", help="Run only this reconciler (repeatable); default: all."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION|ISO",
            help="Only records changed since: a duration (15m, 1h, 2d) or an ISO time.",
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Repair what is found (default: print the plan).")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="PSRs and interactions younger than this are not judged (intake may not "
            "have read them yet); how many were left is reported. 0s judges everything.",
        ),
    ] = "60s",
    as_json: JsonFlag = False,
) -> None:
    """Compare both systems with the ledger and repair drift (dry run by default).

    Exit 0 when nothing unresolved remains (after --apply: once the repairs are carried
    out), 1 when findings remain, 2 on errors."""
    options = Options(unseen_grace=parse_duration(grace, "--grace"))
    settings = load_settings()
    settings.require_ca_bundle()
    names = [r.name for r in select_reconcilers(only)]
    when = parse_when(since, utcnow()) if since else None
    ledger = SqlLedger.from_settings(settings)
    ledger.check_current()
    runtime = Runtime.build(settings, ledger=ledger)
    try:
        with _progress_bars(not as_json) as progress:
            report = run_with(
                runtime, names, apply=apply, since=when, options=options, progress=progress
            )
    finally:
        runtime.close()
    if as_json:
        print_json(report.as_dict())
    else:
        _print(report)
    raise typer.Exit(report.exit_code)


def _print(report: RunReport) -> None:
    title = "repair plan (dry run: nothing changed)" if report.mode == "dry_run" else "repairs"
    # Notes of what was too young to judge are told apart from findings.
    notes = [f for f in report.findings if f["kind"] == WITHIN_GRACE]
    findings = [f for f in report.findings if f["kind"] != WITHIN_GRACE]
    if findings:
        print_table(findings, FINDING_COLUMNS, title)
        counts = [c for c in report.counts() if c["kind"] != WITHIN_GRACE]
        print_table(counts, COUNT_COLUMNS, "findings by kind")
    typer.echo(
        f"run {report.run_id} ({report.mode}): {len(findings)} finding(s), "
        f"{report.unresolved} unresolved, {report.elapsed_seconds:.1f}s"
        + (
            f"; failed reconcilers: {', '.join(report.failed_reconcilers)}"
            if report.failed_reconcilers
            else ""
        )
    )
    for note in notes:
        typer.echo(f"skipped by {note['reconciler']}: {note['reason']}")
    if report.mode == "dry_run" and report.unresolved:
        typer.echo("run again with --apply to repair what has an action")
