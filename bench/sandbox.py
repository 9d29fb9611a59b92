"""Throughput of the sandbox emulators over keep-alive HTTPS.

One function per system (``salesforce()``, ``servicenow()``) returns its figures; ``main()``
runs those that exist, prints them and writes ``bench/results/sandbox.json``.

The load comes from ``wrk`` (a C load generator: Debian's ``wrk`` package) when it is
installed, so that the figure is what the server can serve rather than what Python
clients can send; otherwise from Python clients in separate processes (they do not share
the server's interpreter lock, but on a 2-core machine they take CPU from it).

    uv run python -m bench.sandbox
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bridge.adapters.http import make_session
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox

RESULTS = Path(__file__).parent / "results" / "sandbox.json"
SECONDS = 3.0
WORKERS = 4
RECORDS = 10_000


def _ready(seconds: float) -> None:
    """Warm-up task: makes the pool start (and import) every worker before timing."""
    time.sleep(seconds)


def _worker(
    urls: Sequence[str], headers: dict[str, str], ca_bundle: str, seconds: float
) -> tuple[int, int, float]:
    """GET the urls round-robin on one keep-alive session for ``seconds``:
    (ok, failed, seconds actually spent)."""
    session = make_session(ca_bundle)
    ok = failed = 0
    started = time.monotonic()
    deadline = started + seconds
    index = 0
    while time.monotonic() < deadline:
        answer = session.get(urls[index % len(urls)], headers=headers)
        index += 1
        if answer.status_code == 200:
            ok += 1
        else:
            failed += 1
    return ok, failed, time.monotonic() - started


_WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def throughput(
    urls: Sequence[str],
    headers: dict[str, str],
    ca_bundle: str | Path,
    *,
    seconds: float = SECONDS,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """Requests/s of GETs on ``urls``, round-robin over keep-alive TLS connections."""
    if shutil.which("wrk"):
        return throughput_wrk(urls, headers, seconds=seconds)
    return throughput_python(urls, headers, ca_bundle, seconds=seconds, workers=workers)


def throughput_wrk(
    urls: Sequence[str], headers: dict[str, str], *, seconds: float = SECONDS
) -> dict[str, Any]:
    """``wrk`` with 2 threads and 16 keep-alive connections (it does not verify the
    certificate; the Python clients of the test suite do)."""
    origin = re.match(r"https://[^/]+", urls[0])
    assert origin is not None
    paths = ", ".join(json.dumps(u[len(origin.group(0)) :]) for u in urls)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % paths)
    command = ["wrk", "-t2", "-c16", f"-d{max(1, round(seconds))}s", "-s", script.name]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, origin.group(0) + "/"], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    return {
        "requests_per_second": float(rate.group(1)) if rate else None,
        "requests": int(total.group(1)) if total else None,
        "failed": int(errors.group(1)) if errors else 0,
        "mean_latency": latency.group(1) if latency else None,
        "load_generator": "wrk -t2 -c16",
        "seconds": seconds,
    }


def throughput_python(
    urls: Sequence[str],
    headers: dict[str, str],
    ca_bundle: str | Path,
    *,
    seconds: float = SECONDS,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """Requests/s of GETs on ``urls`` from ``workers`` client processes."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for warm in [pool.submit(_ready, 0.5) for _ in range(workers)]:
            warm.result()
        shuffled = [random.sample(list(urls), len(urls)) for _ in range(workers)]
        before = os.times()
        futures = [pool.submit(_worker, u, headers, str(ca_bundle), seconds) for u in shuffled]
        counts = [f.result() for f in futures]
        after = os.times()
    ok = sum(c[0] for c in counts)
    elapsed = max(c[2] for c in counts)
    # CPU the serving process spent per answer: what one core could serve on a quiet
    # machine, whatever the client processes took from the other cores.
    server_cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "requests_per_second": round(ok / elapsed, 1),
        "server_cpu_us_per_request": round(server_cpu / max(ok, 1) * 1e6),
        "requests_per_server_core_second": round(ok / server_cpu, 1) if server_cpu else None,
        "requests": ok,
        "failed": sum(c[1] for c in counts),
        "load_generator": f"python requests x {workers} processes",
        "workers": workers,
        "seconds": round(elapsed, 2),
    }


def salesforce() -> dict[str, Any]:
    """GET by id and selective SOQL over 10,000 PendingServiceRouting records."""
    with SalesforceSandbox() as sandbox:
        org = sandbox.org
        queue = seed.QUEUES[0].sf_queue_id
        channel = seed.CHANNELS[0].sf_service_channel_id
        psr_ids: list[str] = []
        work_item_ids: list[str] = []
        loading = time.monotonic()
        for n in range(RECORDS):
            session = org.insert("MessagingSession", {"Status": "Waiting"}, system=True)
            psr = org.insert(
                "PendingServiceRouting",
                {
                    "WorkItemId": session["Id"],
                    "ServiceChannelId": channel,
                    "QueueId": queue,
                    "RoutingModel": "ExternalRouting",
                    "RoutingType": "QueueBased",
                    "IsReadyForRouting": n % 2 == 0,
                    "CapacityWeight": 1.0,
                },
                system=True,
            )
            psr_ids.append(psr["Id"])
            work_item_ids.append(session["Id"])
        load_seconds = time.monotonic() - loading
        base = f"{sandbox.instance_url}/services/data/v62.0"
        headers = {"Authorization": f"Bearer {sandbox.issue_token()}"}
        sandbox.rest.usage.limit = 10**9
        sample = random.sample(range(RECORDS), 500)

        psr = "PendingServiceRouting"

        def soql(where: Callable[[int], str]) -> list[str]:
            return [
                f"{base}/query?q="
                + quote(f"SELECT Id, WorkItemId, Serial, IsPushed FROM {psr} WHERE {where(n)}")
                for n in sample
            ]

        return {
            "records": RECORDS,
            "insert_per_second_in_process": round(2 * RECORDS / load_seconds, 1),
            "get_by_id": throughput(
                [f"{base}/sobjects/PendingServiceRouting/{psr_ids[n]}" for n in sample],
                headers,
                sandbox.ca_bundle,
            ),
            "soql_by_id": throughput(
                soql(lambda n: f"Id = '{psr_ids[n]}'"), headers, sandbox.ca_bundle
            ),
            "soql_by_work_item": throughput(
                soql(lambda n: f"WorkItemId = '{work_item_ids[n]}'"), headers, sandbox.ca_bundle
            ),
        }


def servicenow() -> dict[str, Any]:
    """GET by sys_id and pysnc-shaped paged queries over 10,000 awa_work_item records."""
    with ServiceNowSandbox() as sandbox:
        inst = sandbox.instance
        queues = [q.sn_queue_sys_id for q in seed.QUEUES]
        loading = time.monotonic()
        sys_ids = [
            inst.insert(
                "awa_work_item",
                {"queue": queues[n % len(queues)], "document_table": "interaction"},
            )["sys_id"]
            for n in range(RECORDS)
        ]
        load_seconds = time.monotonic() - loading
        base = f"{sandbox.instance_url}/api/now/table/awa_work_item"
        credentials = base64.b64encode(f"{sandbox.username}:{sandbox.password}".encode()).decode()
        headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
        pysnc_params = (
            "sysparm_display_value=all&sysparm_exclude_reference_link=true"
            "&sysparm_suppress_pagination_header=true&sysparm_limit=100"
        )
        # What the bridge's intake sends: raw values of the fields it reads, no display values.
        bridge_params = (
            "sysparm_display_value=false&sysparm_exclude_reference_link=true"
            "&sysparm_suppress_pagination_header=true&sysparm_limit=100"
            "&sysparm_fields=sys_id,sys_updated_on,sys_mod_count,state,active,document_table,"
            "document_id,queue,assigned_to,cancel_reason,rejected,timed_out,external_segment_id"
        )
        sample = random.sample(range(RECORDS), 500)
        pages = RECORDS // len(queues) // 100
        return {
            "records": RECORDS,
            "insert_per_second_in_process": round(RECORDS / load_seconds, 1),
            "get_by_sys_id": throughput(
                [f"{base}/{sys_ids[n]}?{pysnc_params}" for n in sample],
                headers,
                sandbox.ca_bundle,
            ),
            "paged_query_100_rows": throughput(
                [
                    f"{base}?sysparm_query=queue%3D{q}%5EORDERBYsys_id&{pysnc_params}"
                    f"&sysparm_offset={page * 100}"
                    for q in queues
                    for page in range(pages)
                ],
                headers,
                sandbox.ca_bundle,
            ),
            "paged_query_100_rows_bridge_fields": throughput(
                [
                    f"{base}?sysparm_query=queue%3D{q}%5EORDERBYsys_updated_on%5EORDERBYsys_id"
                    f"&{bridge_params}&sysparm_offset={page * 100}"
                    for q in queues
                    for page in range(pages)
                ],
                headers,
                sandbox.ca_bundle,
            ),
        }


SYSTEMS = ("salesforce", "servicenow")


def main() -> None:
    results: dict[str, Any] = {}
    for name in SYSTEMS:
        run = globals().get(name)
        if callable(run):
            results[name] = run()
            print(name, json.dumps(results[name], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
