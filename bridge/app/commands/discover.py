"""`bridge mappings discover`: propose the crosswalk from what both systems hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from bridge.app.commands.common import JsonFlag, columns, console, print_json, print_table
from bridge.domain.discovery import Outcome

if TYPE_CHECKING:
    from bridge.discover import Progress as ProgressCallback


@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressCallback]:
    """Records read so far per read, on standard error; nothing when not a terminal."""
    err = Console(stderr=True)
    if not enabled or not err.is_terminal:
        yield lambda task, done: None
        return
    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed} records"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(task: str, done: int) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=None)
        bars.update(tasks[task], completed=done)

    with bars:
        yield update


def discover(
    write_to: Annotated[
        Path | None,
        typer.Option(
            "--write",
            metavar="FILE",
            help="Merge the matches into this crosswalk (hand-made rows are kept).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="With --write: give hand-made rows the discovered ids."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Read users, queues and service channels of both systems and propose crosswalk rows:
    users by email, then FederationIdentifier = user_name; queues by external id, then
    name; channels by name. Prints matched, ambiguous and unmatched entries with the reason."""
    from bridge.app.commands.mappings import live_adapters  # noqa: PLC0415
    from bridge.discover import propose, read_both, summary, write  # noqa: PLC0415

    salesforce, servicenow = live_adapters()
    with _progress(not as_json) as progress:
        holdings = read_both(salesforce, servicenow, progress)
    proposals = propose(holdings)
    written = write(write_to, proposals, force=force) if write_to is not None else None
    report: dict[str, Any] = {
        "summary": summary(proposals),
        "proposals": [p.as_dict() for p in proposals],
    }
    if written is not None:
        report["write"] = {
            "file": str(written.path),
            "written": written.written,
            "added": len(written.merge.added),
            "unchanged": len(written.merge.unchanged),
            "kept": [{"hand_made": h, "discovered": d} for h, d in written.merge.kept],
            "replaced": len(written.merge.replaced),
            "placeholders_dropped": written.merge.placeholders,
            "problems": [p.as_dict() for p in written.problems],
        }
    if as_json:
        print_json(report)
    else:
        order = {Outcome.MATCHED: 0, Outcome.AMBIGUOUS: 1, Outcome.UNMATCHED: 2}
        rows = [p.as_dict() for p in sorted(proposals, key=lambda p: order[p.outcome])]
        for section in ("queues", "users", "channels"):
            print_table(
                [r for r in rows if r["section"] == section],
                columns("outcome", "salesforce", "servicenow", "by", "reason"),
                title=f"{section}: "
                + ", ".join(f"{n} {k}" for k, n in summary(proposals).get(section, {}).items()),
            )
        if written is not None:
            out = console()
            for problem in written.problems:
                out.print(str(problem), markup=False)
            m = written.merge
            verdict = "wrote" if written.written else "did not write (invalid)"
            out.print(
                f"{verdict} {written.path}: {len(m.added)} added, {len(m.unchanged)} unchanged, "
                f"{len(m.replaced)} replaced, {len(m.kept)} hand-made kept"
                + ("" if force or not m.kept else " (--force to replace them)"),
                markup=False,
            )
    if written is not None and not written.written:
        raise typer.Exit(2)
