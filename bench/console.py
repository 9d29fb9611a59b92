"""Console benchmark: the conversation page on a 1,000,000-correlation ledger.

    uv run python -m bench.console                          # the figure: 1,000,000 correlations
    uv run python -m bench.console --correlations 20000     # a quick run

The ledger is a SQLite file built with Core bulk inserts (``bench.ledger.seed``: one segment
per correlation, created over 30 days), plus one inbox event and one outbox command per
correlation, and one conversation with a full history (3 segments, 14 events, 8 commands,
a finding). Then:

- server time: the page rendered by the console's ASGI app in process (routing, the
  credential check, the ledger reads, the timeline, the template), by correlation id and
  by PSR id; ``list`` pages (first page, and filtered by agent) for comparison;
- request time: the same page over HTTP on loopback (uvicorn, requests);
- page weight: the HTML plus the one stylesheet it links (no script, no images).

Prints the figures and writes JSON (``--output``, default ``bench/results/console.json``).
Target (issue 14): server time ≤ 100 ms, page weight ≤ 200 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger import seed
from bridge.console import Credentials, console_app, standalone_app
from bridge.console.server import Server
from bridge.ledger import SqlLedger
from bridge.ledger.rows import (
    Correlation,
    Finding,
    InboxEvent,
    OutboxCommand,
    ReconcileRun,
    Segment,
)
from bridge.ledger.sql import table
from bridge.ledger.words import crosswalk_names

TOKEN = "bench-token"  # the benchmark's own credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAPPINGS = Path(__file__).resolve().parent.parent / "sandbox" / "bridge_sandbox" / "mappings"
BOB_SN, CAROL_SN, ALICE_SF = (
    "e5e296f73915522ea97b2a0f6be80883",
    "d4572697450559818caee86263b7c1de",
    "0055g0000000001AAA",
)
SUPPORT_SN = "d42451cd342c530d82ae640061f1842f"


def add_traffic(ledger: SqlLedger, chunk: int = 20_000) -> float:
    """One processed inbox event and one confirmed command per correlation."""
    start = time.perf_counter()
    with ledger.engine.begin() as conn:
        ids = [
            (row[0], row[1])
            for row in conn.execute(select(Correlation.id, Correlation.created_at))  # type: ignore[call-overload]
        ]
        for first in range(0, len(ids), chunk):
            events, commands = [], []
            for cid, at in ids[first : first + chunk]:
                events.append(
                    {
                        "source": "servicenow",
                        "stream": "servicenow:awa_work_item",
                        "source_event_id": f"awa_work_item:{cid}:1",
                        "kind": "awa_work_item",
                        "occurred_at": at,
                        "received_at": at,
                        "payload": {"sys_id": cid, "state": "accepted", "active": "true"},
                        "correlation_id": cid,
                        "status": "processed",
                        "processed_at": at,
                    }
                )
                commands.append(
                    {
                        "id": str(uuid.uuid4()),
                        "idempotency_key": f"{cid}:1:offer",
                        "correlation_id": cid,
                        "system": "servicenow",
                        "operation": "offer",
                        "payload": {"queue_id": SUPPORT_SN, "candidates": [BOB_SN]},
                        "status": "confirmed",
                        "attempts": 1,
                        "created_at": at,
                        "updated_at": at,
                        "completed_at": at,
                    }
                )
            conn.execute(table(InboxEvent).insert(), events)
            conn.execute(table(OutboxCommand).insert(), commands)
    return time.perf_counter() - start


def add_history(ledger: SqlLedger, correlation_id: str) -> None:
    """A conversation with a full history: offered, timed out, re-offered, transferred,
    accepted, closed; its commands, echoes and a reconciliation finding."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)

    def at(ms: int) -> datetime:
        return t0 + timedelta(milliseconds=ms)

    with ledger.engine.begin() as conn:
        conn.execute(
            table(Correlation)
            .update()
            .where(table(Correlation).c.id == correlation_id)
            .values(
                state="closed", sn_user_sys_id=CAROL_SN, sf_user_id=ALICE_SF, closed_at=at(9000)
            )
        )
        segs = []
        for seq, user, outcome, opened, closed in (
            (2, CAROL_SN, "timed_out", 1000, 31000),
            (3, BOB_SN, "closed", 31000, 90000),
        ):
            segs.append(
                {
                    "id": uuid.uuid4().hex,
                    "correlation_id": correlation_id,
                    "seq": seq,
                    "external_segment_id": f"{correlation_id}-{seq}",
                    "kind": "offer" if seq == 2 else "transfer",
                    "sn_user_sys_id": user,
                    "sn_queue_sys_id": SUPPORT_SN,
                    "sn_work_item_sys_id": f"{seq:032x}",
                    "opened_at": at(opened),
                    "closed_at": at(closed),
                    "outcome": outcome,
                    "detail": {},
                }
            )
        conn.execute(table(Segment).insert(), segs)
        events = []
        for n, (kind, ms, payload, status) in enumerate(
            [
                (
                    "psr",
                    0,
                    {"Id": "0JR5g0000000XXXAAA", "Serial": 0, "IsPushed": False},
                    "processed",
                ),
                (
                    "awa_work_item",
                    1000,
                    {"state": "pending_accept", "assigned_to": CAROL_SN},
                    "echo",
                ),
                ("interaction", 1000, {"state": "new"}, "echo"),
                ("awa_work_item", 31000, {"state": "queued", "timed_out": "true"}, "processed"),
                (
                    "awa_work_item",
                    32000,
                    {"state": "pending_accept", "assigned_to": BOB_SN},
                    "echo",
                ),
                ("awa_work_item", 35000, {"state": "accepted", "assigned_to": BOB_SN}, "processed"),
                (
                    "interaction",
                    35000,
                    {"state": "work_in_progress", "assigned_to": BOB_SN},
                    "processed",
                ),
                ("psr", 35500, {"Id": "0JR5g0000000XXXAAA", "Serial": 1, "IsPushed": True}, "echo"),
                (
                    "agent_work",
                    35500,
                    {"Id": "0Bz5g0000000XXXAAA", "Status": "Assigned", "UserId": ALICE_SF},
                    "echo",
                ),
                (
                    "agent_work",
                    40000,
                    {"Id": "0Bz5g0000000XXXAAA", "Status": "Opened", "UserId": ALICE_SF},
                    "processed",
                ),
                ("psr_deleted", 40000, {"Id": "0JR5g0000000XXXAAA"}, "processed"),
                (
                    "agent_work",
                    90000,
                    {"Id": "0Bz5g0000000XXXAAA", "Status": "Closed", "UserId": ALICE_SF},
                    "processed",
                ),
                ("work_item", 90000, {"Id": "0Mw5g0000000XXXAAA", "Status": "Ended"}, "processed"),
                ("interaction", 91000, {"state": "closed_complete", "assigned_to": BOB_SN}, "echo"),
            ]
        ):
            source = "servicenow" if kind in ("awa_work_item", "interaction") else "salesforce"
            events.append(
                {
                    "source": source,
                    "stream": f"{source}:{kind}",
                    "source_event_id": f"{kind}:{correlation_id}:h{n}",
                    "kind": kind,
                    "occurred_at": at(ms),
                    "received_at": at(ms + 120),
                    "payload": {"sys_id": f"{n:032x}", "number": f"AWI{n:07d}", **payload},
                    "correlation_id": correlation_id,
                    "status": status,
                    "processed_at": at(ms + 130),
                }
            )
        conn.execute(table(InboxEvent).insert(), events)
        commands = []
        for n, (system, op, ms, payload, status, error) in enumerate(
            [
                (
                    "servicenow",
                    "create_interaction",
                    200,
                    {"record": {"sys_id": "a" * 32}},
                    "confirmed",
                    None,
                ),
                (
                    "servicenow",
                    "offer",
                    31200,
                    {"queue_id": SUPPORT_SN, "candidates": [BOB_SN]},
                    "confirmed",
                    None,
                ),
                ("salesforce", "create_agent_work", 35200, {"UserId": ALICE_SF}, "confirmed", None),
                (
                    "salesforce",
                    "update_agent_work",
                    35300,
                    {"workId": "0Bz5g0000000YYY", "status": "Cancel"},
                    "confirmed",
                    None,
                ),
                (
                    "salesforce",
                    "delete_psr",
                    40200,
                    {"id": "0JR5g0000000XXXAAA"},
                    "dead",
                    '{"kind": "permanent", "message": "ENTITY_IS_DELETED"}',
                ),
                (
                    "servicenow",
                    "close_interaction",
                    90200,
                    {"sys_id": "a" * 32, "state": "closed_complete"},
                    "confirmed",
                    None,
                ),
                (
                    "servicenow",
                    "cancel_work_item",
                    90300,
                    {"sys_id": "b" * 32, "cancel_reason": "manually_assigned"},
                    "confirmed",
                    None,
                ),
            ]
        ):
            commands.append(
                {
                    "id": str(uuid.uuid4()),
                    "idempotency_key": f"{correlation_id}:h{n}:{op}",
                    "correlation_id": correlation_id,
                    "system": system,
                    "operation": op,
                    "payload": payload,
                    "status": status,
                    "attempts": 1 if status == "confirmed" else 5,
                    "created_at": at(ms),
                    "updated_at": at(ms + 40),
                    "completed_at": at(ms + 40),
                    "response": {"id": "0Bz5g0000000XXXAAA"} if op == "create_agent_work" else None,
                    "error": error,
                }
            )
        conn.execute(table(OutboxCommand).insert(), commands)
        run_id = uuid.uuid4().hex
        run = {"id": run_id, "started_at": at(95000), "finished_at": at(96000), "mode": "dry_run",
               "reconcilers": ["orphaned_psr"], "status": "succeeded", "summary": {}}  # fmt: skip
        conn.execute(table(ReconcileRun).insert(), [run])
        finding = {"id": uuid.uuid4().hex, "run_id": run_id, "reconciler": "orphaned_psr",
                   "kind": "orphaned_psr", "subject": "0JR5g0000000XXXAAA", "detail": {},
                   "correlation_id": correlation_id, "action": "delete_psr", "status": "planned",
                   "created_at": at(95500)}  # fmt: skip
        conn.execute(table(Finding).insert(), [finding])


async def _asgi_get(app: Any, path: str, query: str = "") -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", AUTH["Authorization"].encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    status, body = 0, bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def server_times(app: Any, pages: dict[str, tuple[str, str]], repeat: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, (path, query) in pages.items():
            status, body = await _asgi_get(app, path, query)  # warm: templates compiled
            assert status == 200, (name, status, body[:300])
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                status, body = await _asgi_get(app, path, query)
                samples.append(time.perf_counter() - start)
            out[name] = {**figures(samples), "status": status, "html_bytes": len(body)}
        return out

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--correlations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=100, help="samples per figure")
    parser.add_argument("--dir", type=Path, help="keep the ledger here (default: a temp dir)")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "console.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        results = run(directory / "ledger.db", args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")


def run(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    url = f"sqlite:///{path}"
    ledger = SqlLedger(url)
    ledger.upgrade()
    sample, seeded = seed(ledger, args.correlations)
    traffic = add_traffic(ledger)
    target = sample["correlation id"]
    add_history(ledger, target)
    print(
        f"ledger: {args.correlations} correlations + segments in {seeded:.1f} s, "
        f"+ an event and a command each in {traffic:.1f} s ({path.stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )
    app = standalone_app(
        console_app(ledger, Credentials(token=SecretStr(TOKEN)), names=crosswalk_names(MAPPINGS))
    )
    pages = {
        "conversation by correlation id": (f"/console/c/{target}", ""),
        "conversation by PSR id": (f"/console/c/{sample['PSR id']}", ""),
        "list, first page": ("/console/", ""),
        "list, one agent, last 1h": ("/console/", f"agent={BOB_SN}&since=1h"),
    }
    server = server_times(app, pages, args.repeat)
    for name, f in server.items():
        print(f"   server time, {name:<32} p50 {f['p50_ms']} ms  p95 {f['p95_ms']} ms  "
              f"max {f['max_ms']} ms  ({f['html_bytes']} bytes)")  # fmt: skip

    http = requests.Session()
    http.trust_env = False
    listener = Server(app, host="127.0.0.1", port=0)
    listener.start()
    try:
        base = f"http://127.0.0.1:{listener.port}"
        page_url = base + pages["conversation by correlation id"][0]
        http.get(page_url, headers=AUTH, timeout=30)
        samples, app_times = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            answer = http.get(page_url, headers=AUTH, timeout=30)
            samples.append(time.perf_counter() - start)
            # the console's own Server-Timing: request in → response headers out
            app_times.append(float(answer.headers["Server-Timing"].split("dur=")[1]) / 1000)
        assert answer.status_code == 200
        html = answer.content
        css = http.get(base + "/console/static/console.css", headers=AUTH, timeout=30).content
    finally:
        listener.stop()
    request = figures(samples)
    request["server_timing"] = figures(app_times)
    weight = {"html_bytes": len(html), "css_bytes": len(css), "total_bytes": len(html) + len(css)}
    print(f"   over HTTP (loopback): request p50 {request['p50_ms']} ms  "
          f"p95 {request['p95_ms']} ms; Server-Timing p50 {request['server_timing']['p50_ms']} ms  "
          f"p95 {request['server_timing']['p95_ms']} ms")  # fmt: skip
    print(f"   page weight: {weight['html_bytes']} B HTML + {weight['css_bytes']} B CSS = "
          f"{weight['total_bytes'] / 1024:.1f} KB (no script, no images)")  # fmt: skip
    conv = server["conversation by correlation id"]
    rows = {"correlations": args.correlations, "segments": args.correlations + 2,
            "inbox_events": args.correlations + 14, "commands": args.correlations + 7}  # fmt: skip
    ok = conv["p95_ms"] <= 100 and weight["total_bytes"] <= 200 * 1024
    print(f"   target (server ≤ 100 ms, page ≤ 200 KB): {'met' if ok else 'NOT met'}")
    ledger.close()
    return {
        "when": datetime.now(UTC).isoformat(),
        "params": {"correlations": args.correlations, "repeat": args.repeat},
        "ledger": {
            "seed_seconds": round(seeded, 1),
            "traffic_seconds": round(traffic, 1),
            "file_mb": round(path.stat().st_size / 1e6),
            "rows": rows,
        },
        "server_time": server,
        "request_time_http": request,
        "page_weight": weight,
        "target_met": ok,
    }


if __name__ == "__main__":
    main()
