"""SqlLedger benchmark: intake + outbox throughput, and audit queries on a large ledger.

    uv run python bench/ledger.py                       # full figures, SQLite
    uv run python bench/ledger.py --postgres postgresql+psycopg://postgres@127.0.0.1/test
    uv run python bench/ledger.py --events 1000 --correlations 10000   # quick smoke run

Throughput: pages of ``--page`` events; per page one transaction records the events and
moves the cursor, a second marks them processed and enqueues one command each (what the
engine does). Queries: ``--correlations`` correlations with one segment each, created over
30 days; ``show`` by every kind of id and ``list --since 1h``, in process and through the CLI.
Prints the figures and writes them as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app.cli import app
from bridge.ledger import NewCommand, NewEvent, SqlLedger, audit
from bridge.ledger.rows import Correlation, Segment
from bridge.ledger.sql import table

NOW = datetime.now(UTC)


def throughput(ledger: SqlLedger, events: int, page: int) -> dict[str, Any]:
    with ledger.transaction() as tx:
        corr = tx.correlations.create(direction="sf_to_sn", state="offered").id
    start = time.perf_counter()
    for first in range(0, events, page):
        batch = [
            NewEvent(
                "salesforce",
                f"0JR{n:015d}:1",
                "psr_created",
                NOW,
                {"Id": f"0JR{n:015d}", "Serial": 1},
            )
            for n in range(first, min(first + page, events))
        ]
        with ledger.transaction() as tx:
            recorded = tx.inbox.record("sf:psr", batch, cursor=str(first + len(batch)))
        with ledger.transaction() as tx:
            tx.inbox.mark(recorded.inserted, "processed", correlation_id=corr)
            tx.outbox.add(
                *(
                    NewCommand(
                        f"offer:{e.source_event_id}",
                        corr,
                        "servicenow",
                        "offer",
                        {"psr": e.source_event_id},
                    )
                    for e in batch
                )
            )
    elapsed = time.perf_counter() - start
    return {
        "events": events,
        "commands": events,
        "page": page,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "events_plus_commands_per_s": round(2 * events / elapsed),
    }


def seed(ledger: SqlLedger, n: int, chunk: int = 20_000) -> tuple[dict[str, str], float]:
    """``n`` correlations, each with one segment, created evenly over the last 30 days."""
    span = timedelta(days=30)
    pick, picked = n // 3, ""
    start = time.perf_counter()
    with ledger.engine.begin() as conn:
        for first in range(0, n, chunk):
            corrs, segs = [], []
            for i in range(first, min(first + chunk, n)):
                cid = uuid.uuid4().hex
                if i == pick:
                    picked = cid
                at = NOW - span * (1 - i / n)
                corrs.append(
                    {
                        "id": cid,
                        "direction": "sf_to_sn" if i % 2 else "sn_to_sf",
                        "state": ("accepted", "offered", "closed")[i % 3],
                        "version": 1,
                        "sf_psr_id": f"0JR{i:015d}",
                        "sf_work_item_id": f"0Mw{i:015d}",
                        "sf_queue_id": f"00G{i % 50:015d}",
                        "sn_document_table": "interaction",
                        "sn_document_sys_id": f"{i:032x}",
                        "sn_user_sys_id": f"{i % 500:031x}u",
                        "data": {},
                        "created_at": at,
                        "updated_at": at,
                    }
                )
                segs.append(
                    {
                        "id": uuid.uuid4().hex,
                        "correlation_id": cid,
                        "seq": 1,
                        "external_segment_id": f"{cid}-1",
                        "kind": "offer",
                        "sf_agent_work_id": f"0Bz{i:015d}",
                        "sn_work_item_sys_id": f"{i:031x}w",
                        "opened_at": at,
                        "detail": {},
                    }
                )
            conn.execute(table(Correlation).insert(), corrs)
            conn.execute(table(Segment).insert(), segs)
    i = pick
    sample = {
        "correlation id": picked,
        "PSR id": f"0JR{i:015d}",
        "work item id": f"0Mw{i:015d}",
        "sys_id (document)": f"{i:032x}",
        "AgentWork id (segment)": f"0Bz{i:015d}",
        "awa_work_item sys_id (segment)": f"{i:031x}w",
        "external_segment_id": f"{picked}-1",
    }
    if ledger.engine.dialect.name == "postgresql":
        with ledger.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return sample, time.perf_counter() - start


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
        "max_ms": round(samples[-1], 3),
    }


def queries(ledger: SqlLedger, url: str, sample: dict[str, str], repeat: int) -> dict[str, Any]:
    def show(any_id: str) -> None:
        with ledger.reading() as tx:
            tx.audit.correlation_detail(any_id)

    def list_since() -> None:
        with ledger.reading() as tx:
            rows = tx.audit.list_correlations(
                audit.CorrelationFilter(since=NOW - timedelta(hours=1)), 50
            )
            assert rows

    out: dict[str, Any] = {
        "show": {k: timed(lambda v=v: show(v), repeat) for k, v in sample.items()}
    }
    out["list_since_1h_limit_50"] = timed(list_since, repeat)
    runner = CliRunner()
    env = {"BRIDGE_LEDGER_URL": url}

    def cli(*args: str) -> None:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output

    out["cli_show_by_psr_json"] = timed(
        lambda: cli("ledger", "show", sample["PSR id"], "--json"), max(5, repeat // 10)
    )
    out["cli_list_since_1h_json"] = timed(
        lambda: cli("ledger", "list", "--since", "1h", "--json"), max(5, repeat // 10)
    )
    return out


def _figures(f: dict[str, float]) -> str:
    return f"median {f['median_ms']:8.3f} ms  p95 {f['p95_ms']:8.3f} ms"


def run(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"== {name}: {make_url(url).render_as_string(hide_password=True)}", flush=True)
    ledger = SqlLedger(url)
    ledger.upgrade()
    result: dict[str, Any] = {"throughput": throughput(ledger, args.events, args.page)}
    t = result["throughput"]
    print(
        f"   intake+outbox: {t['events']} events + {t['commands']} commands in {t['seconds']} s "
        f"= {t['events_plus_commands_per_s']}/s ({t['events_per_s']} events/s)",
        flush=True,
    )
    sample, seeded = seed(ledger, args.correlations)
    result["seed"] = {
        "correlations": args.correlations,
        "segments": args.correlations,
        "seconds": round(seeded, 1),
    }
    print(f"   seeded {args.correlations} correlations + segments in {seeded:.1f} s", flush=True)
    result["queries"] = queries(ledger, url, sample, args.repeat)
    for kind, figures in result["queries"]["show"].items():
        print(f"   show by {kind:<40}", _figures(figures))
    for key in ("list_since_1h_limit_50", "cli_show_by_psr_json", "cli_list_since_1h_json"):
        print(f"   {key:<48}", _figures(result["queries"][key]))
    ledger.close()
    return result


def postgres_schema(base: str) -> tuple[str, Callable[[], None]]:
    """A scratch schema for the run, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=200)
    parser.add_argument("--correlations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="samples per query figure")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BRIDGE_TEST_POSTGRES_URL"),
        help="also run on this PostgreSQL database (a scratch schema)",
    )
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "ledger.json"
    )
    args = parser.parse_args()

    results: dict[str, Any] = {
        "when": NOW.isoformat(),
        "params": {k: v for k, v in vars(args).items() if k not in ("output", "postgres")},
    }
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = run("sqlite", f"sqlite:///{tmp}/ledger.db", args)
    if args.postgres:
        url, drop = postgres_schema(args.postgres)
        try:
            results["postgresql"] = run("postgresql", url, args)
        finally:
            drop()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
