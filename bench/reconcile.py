"""A full dry-run reconciliation over a large contact centre.

The sandboxes run in a child process, seeded through their Python API (not HTTP) with
``--psrs`` open PSRs on the two external-routing queues, an interaction and a queued AWA
work item for each, and the ledger with as many correlations: every PSR but one in a
hundred has its correlation (the rest are unseen), one in two hundred of those was
abandoned without its PSR being deleted (orphans, with a work item still queued in AWA),
and closed history fills the ledger up to ``--psrs`` correlations. The parent process then
runs every reconciler in dry-run over HTTPS with the real clients, so its peak RSS is the
bridge's own, and prints elapsed time, API calls (the sandboxes' counters) and peak RSS.

    uv run python -m bench.reconcile [--psrs 100000] [--out bench/results/reconcile.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr
from sqlalchemy import insert

from bridge.adapters.http import make_session
from bridge.adapters.salesforce.auth import SalesforceTokens
from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.app.runtime import Runtime
from bridge.app.settings import Settings
from bridge.engine import derived_id, interaction_sys_id
from bridge.ledger import Correlation, SqlLedger
from bridge.ledger.rows import utcnow
from bridge.ledger.sql import table
from bridge.reconcile import Options, context_for, run
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.serving import SandboxCA
from bridge_sandbox.tables import load_tables

RESULTS = Path(__file__).parent / "results" / "reconcile.json"
UNSEEN_EVERY = 100
ORPHAN_EVERY = 200
QUEUES = [q for q in seed.QUEUES if q.direction == "sf_to_sn"]
MESSAGING = seed.CHANNELS[0]


def _seed(
    sf: SalesforceSandbox, sn: ServiceNowSandbox, ledger: SqlLedger, psrs: int
) -> dict[str, int]:
    """Both systems and the ledger, through Python (no HTTP); returns what was made."""
    before = utcnow() - timedelta(minutes=10)
    rows: list[dict[str, Any]] = []
    made = {"psrs": 0, "unseen": 0, "orphans": 0, "correlations": 0}
    for n in range(psrs):
        queue = QUEUES[n % len(QUEUES)]
        item, psr = sf.omni.start(queue.sf_developer_name, MESSAGING.name)
        made["psrs"] += 1
        if n % UNSEEN_EVERY == UNSEEN_EVERY - 1:
            made["unseen"] += 1
            continue
        corr_id = derived_id("sf", "psr", psr["Id"])
        document = sn.instance.insert(
            "interaction",
            {
                "sys_id": interaction_sys_id(corr_id),
                "state": "on_hold",
                "type": "chat",
                "correlation_id": item["Id"],
                "queue": queue.sn_queue_sys_id,
            },
        )
        sn.awa.new_work_item("interaction", document, queue.sn_queue_sys_id)
        state = "offered"
        if n % ORPHAN_EVERY == 0:
            sf.omni.abandon(item["Id"])
            state = "abandoned"
            made["orphans"] += 1
        rows.append(_correlation(corr_id, state, psr, item["Id"], queue.sf_queue_id, before))
    for n in range(psrs - len(rows)):  # closed history up to the same number
        closed_id = derived_id("bench", "closed", str(n))
        rows.append(_correlation(closed_id, "closed", None, None, QUEUES[0].sf_queue_id, before))
    # Bulk rows straight into the table: the bench's own fixture, not the bridge's path.
    with ledger.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(table(Correlation)), rows[start : start + 5000])
    made["correlations"] = len(rows)
    return made


def _correlation(
    corr_id: str,
    state: str,
    psr: dict[str, Any] | None,
    work_item: str | None,
    queue: str,
    when: Any,
) -> dict[str, Any]:
    return {
        "id": corr_id,
        "direction": "sf_to_sn",
        "state": state,
        "version": 1,
        "sf_psr_id": psr["Id"] if psr else None,
        "sf_work_item_id": work_item,
        "sf_queue_id": queue,
        "sf_service_channel_id": MESSAGING.sf_service_channel_id,
        "sn_document_table": "interaction",
        "sn_document_sys_id": interaction_sys_id(corr_id),
        "data": {"push_timeout": 30, "channel": MESSAGING.name},
        "created_at": when,
        "updated_at": when,
        "closed_at": when if state == "closed" else None,
    }


def _serve(conn: Connection, directory: str, ledger_url: str, psrs: int) -> None:
    """The child: seed, serve, answer the parent's questions, stop when told."""
    ca = SandboxCA(Path(directory) / "ca")
    with SalesforceSandbox(ca=ca) as sf, ServiceNowSandbox(ca=ca) as sn:
        ledger = SqlLedger(ledger_url)
        ledger.upgrade()
        started = time.monotonic()
        made = _seed(sf, sn, ledger, psrs)
        ledger.close()
        conn.send(
            {
                "made": made,
                "seed_seconds": round(time.monotonic() - started, 1),
                "sf": sf.facts(),
                "sn": {
                    "instance_url": sn.instance_url,
                    "username": sn.username,
                    "password": sn.password,
                },
                "ca_bundle": str(ca.ca_bundle),
            }
        )
        for counters in (sf.counters, sf.scrt_counters, sn.counters):
            counters.reset()
        cpu = _cpu()
        conn.recv()  # the run is over
        conn.send(
            {
                "cpu_seconds": round(_cpu() - cpu, 1),
                "salesforce": sf.counters.total() + sf.scrt_counters.total(),
                "servicenow": sn.counters.total(),
                "by_route": {
                    "salesforce": sf.counters.snapshot(),
                    "servicenow": sn.counters.snapshot(),
                },
            }
        )


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _runtime(facts: dict[str, Any], ledger: SqlLedger) -> Runtime:
    sf = facts["sf"]
    ca = facts["ca_bundle"]
    tokens = SalesforceTokens(
        make_session(ca, system="salesforce"),
        login_url=sf["instance_url"],
        client_id=sf["client_id"],
        client_secret=SecretStr(sf["client_secret"]),
    )
    salesforce = SalesforceAdapter(
        make_session(ca, system="salesforce"),
        tokens,
        api_version=sf["api_version"],
        scrt_url=sf["scrt_url"],
        org_id=sf["org_id"],
        authorization_context="BYO_SandboxChannel",
    )
    servicenow = ServiceNowAdapter(
        make_session(ca, system="servicenow"),
        facts["sn"]["instance_url"],
        username=facts["sn"]["username"],
        password=SecretStr(facts["sn"]["password"]),
    )
    settings = Settings(_env_file=None)
    return Runtime(settings, ledger, load_tables(), salesforce=salesforce, servicenow=servicenow)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psrs", type=int, default=100_000, help="open PSRs (and correlations)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as directory:
        ledger_url = f"sqlite:///{Path(directory) / 'ledger.db'}"
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=_serve, args=(child, directory, ledger_url, args.psrs))
        server.start()
        try:
            facts = parent.recv()
            print(f"seeded in {facts['seed_seconds']}s: {facts['made']}", file=sys.stderr)
            ledger = SqlLedger(ledger_url)
            runtime = _runtime(facts, ledger)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started, cpu = time.monotonic(), _cpu()
            # the seed is minutes old in the ledger but seconds old in the org: no grace
            options = Options(unseen_grace=timedelta(0))
            rss_by_task: dict[str, float] = {}

            def sample(task: str, done: int, total: int | None) -> None:
                del done, total
                rss = psutil.Process().memory_info().rss / 2**20
                rss_by_task[task] = round(max(rss, rss_by_task.get(task, 0.0)), 1)

            ctx = context_for(runtime, options=options, progress=sample)
            report = run(ctx, None, apply=False)
            elapsed, cpu = time.monotonic() - started, _cpu() - cpu
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            runtime.close()
            ledger.close()
            parent.send("done")
            calls = parent.recv()
        finally:
            server.join(timeout=30)
            if server.is_alive():
                server.terminate()
    figures = {
        "psrs": args.psrs,
        "seeded": facts["made"],
        "elapsed_seconds": round(elapsed, 2),
        "cpu_seconds": {"bridge": round(cpu, 1), "sandboxes": calls["cpu_seconds"]},
        "api_calls": {
            "total": calls["salesforce"] + calls["servicenow"],
            "salesforce": calls["salesforce"],
            "servicenow": calls["servicenow"],
        },
        "peak_rss_mb": round(peak, 1),
        "rss_before_run_mb": round(rss_before, 1),
        "rss_by_reconciler_mb": rss_by_task,
        "seconds_by_reconciler": {k: round(v, 2) for k, v in report.seconds.items()},
        "findings": report.counts(),
        "failed_reconcilers": report.failed_reconcilers,
        "targets": {"elapsed_seconds": 60, "api_calls": 1000, "peak_rss_mb": 300},
        "api_calls_by_route": calls["by_route"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"{args.psrs} PSRs: {figures['elapsed_seconds']}s, "
        f"{figures['api_calls']['total']} API calls "
        f"(Salesforce {calls['salesforce']}, ServiceNow {calls['servicenow']}), "
        f"peak RSS {figures['peak_rss_mb']} MB"
    )
    print("  CPU seconds:", figures["cpu_seconds"], f"(load average {os.getloadavg()[0]:.1f})")
    print("  seconds:", figures["seconds_by_reconciler"])
    print("  RSS MB:", rss_by_task)
    for row in report.counts():
        print(f"  {row['reconciler']:<20} {row['kind']:<34} {row['status']:<10} {row['count']}")
    return figures


if __name__ == "__main__":
    main()
