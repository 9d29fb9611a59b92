"""`bridge mappings discover` on a large contact centre.

The sandboxes run in a child process, seeded through their Python API (not HTTP) with
``--users`` agents on each side on top of the seed: one in two shares the email across both
systems, the others only the federation id (Salesforce ``FederationIdentifier`` = ServiceNow
``user_name``); one in a hundred Salesforce users has no counterpart, one in a hundred
ServiceNow agents shares a colleague's email (ambiguous). The parent process reads both
systems over HTTPS with the real clients, matches, and writes the crosswalk, as the command
does; it prints elapsed time, API calls (the sandboxes' counters) and the outcome counts.

    uv run python -m bench.discover [--users 2000] [--out bench/results/discover.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridge.adapters.http import make_session
from bridge.adapters.salesforce.auth import SalesforceTokens
from bridge.adapters.salesforce.client import SalesforceAdapter
from bridge.adapters.servicenow.client import ServiceNowAdapter
from bridge.discover import propose, read_both, summary, write
from bridge.domain.mapping import check_tables
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.salesforce.ids import make_id
from bridge_sandbox.servicenow.app import ServiceNowSandbox
from bridge_sandbox.servicenow.store import role_sys_id
from bridge_sandbox.serving import SandboxCA
from bridge_sandbox.tables import DIRECTORY as SANDBOX_MAPPINGS

RESULTS = Path(__file__).parent / "results" / "discover.json"
TARGET_SECONDS = 30
LONELY_EVERY = 100
SHARED_EMAIL_EVERY = 100


def _seed(sf: SalesforceSandbox, sn: ServiceNowSandbox, users: int) -> dict[str, int]:
    """``users`` agents on each side, through Python (no HTTP); returns what was made."""
    made = {"sf_users": 0, "sn_agents": 0, "by_email": 0, "by_federation_id": 0}
    for n in range(users):
        login = f"agent{n:05d}"
        by_email = n % 2 == 0
        sn_email = f"{login}@example.com"
        if n % SHARED_EMAIL_EVERY == SHARED_EMAIL_EVERY - 1:
            sn_email = f"agent{n - 1:05d}@example.com"  # a colleague's address
        lonely = n % LONELY_EVERY == LONELY_EVERY // 2
        sf.org.insert(
            "User",
            {
                "Id": make_id("005", 1000 + n),
                "Username": f"{login}@example.com.sandbox",
                "FirstName": "Agent",
                "LastName": f"{n:05d}",
                "Alias": login[:8],
                "Email": f"{login}@example.com" if by_email else f"{login}@example.com.invalid",
                "FederationIdentifier": None if lonely else login,
            },
            system=True,
        )
        made["sf_users"] += 1
        if lonely:
            continue
        sys_id = seed.sys_id(f"sys_user:{login}")
        sn.instance.insert(
            "sys_user",
            {
                "sys_id": sys_id,
                "user_name": login if not lonely else f"x{login}",
                "name": f"Agent {n:05d}",
                "first_name": "Agent",
                "last_name": f"{n:05d}",
                "email": sn_email,
            },
        )
        for role in ("awa_agent", "awa_external_user"):
            sn.instance.insert(
                "sys_user_has_role",
                {
                    "sys_id": seed.sys_id(f"sys_user_has_role:{login}:{role}"),
                    "user": sys_id,
                    "role": role_sys_id(role),
                },
            )
        made["sn_agents"] += 1
        made["by_email" if by_email else "by_federation_id"] += 1
    return made


def _serve(conn: Connection, directory: str, users: int) -> None:
    """The child: seed, serve, answer the parent's questions, stop when told."""
    ca = SandboxCA(Path(directory) / "ca")
    with SalesforceSandbox(ca=ca) as sf, ServiceNowSandbox(ca=ca) as sn:
        started = time.monotonic()
        made = _seed(sf, sn, users)
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
        conn.recv()  # the run is over
        conn.send(
            {
                "salesforce": sf.counters.total(),
                "servicenow": sn.counters.total(),
                "by_route": {
                    "salesforce": sf.counters.snapshot(),
                    "servicenow": sn.counters.snapshot(),
                },
            }
        )


def _adapters(facts: dict[str, Any]) -> tuple[SalesforceAdapter, ServiceNowAdapter]:
    sf = facts["sf"]
    ca = facts["ca_bundle"]
    tokens = SalesforceTokens(
        make_session(ca, system="salesforce"),
        login_url=sf["instance_url"],
        client_id=sf["client_id"],
        client_secret=SecretStr(sf["client_secret"]),
    )
    salesforce = SalesforceAdapter(
        make_session(ca, system="salesforce"), tokens, api_version=sf["api_version"]
    )
    servicenow = ServiceNowAdapter(
        make_session(ca, system="servicenow"),
        facts["sn"]["instance_url"],
        username=facts["sn"]["username"],
        password=SecretStr(facts["sn"]["password"]),
    )
    return salesforce, servicenow


def _command(facts: dict[str, Any], directory: Path) -> dict[str, float]:
    """The command itself, as a process of its own: table (to a file) and --json, each
    writing a fresh crosswalk (start-up, reads, matching, rendering and the write)."""
    sf, sn = facts["sf"], facts["sn"]
    (directory / "secrets").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {
        "BRIDGE_SECRETS_DIR": str(directory / "secrets"),
        "BRIDGE_DATA_DIR": str(directory),
        "BRIDGE_CA_BUNDLE": facts["ca_bundle"],
        "BRIDGE_SALESFORCE__INSTANCE_URL": sf["instance_url"],
        "BRIDGE_SALESFORCE__LOGIN_URL": sf["instance_url"],
        "BRIDGE_SALESFORCE__CLIENT_ID": sf["client_id"],
        "BRIDGE_SALESFORCE__CLIENT_SECRET": sf["client_secret"],
        "BRIDGE_SERVICENOW__INSTANCE_URL": sn["instance_url"],
        "BRIDGE_SERVICENOW__USERNAME": sn["username"],
        "BRIDGE_SERVICENOW__PASSWORD": sn["password"],
    }
    seconds: dict[str, float] = {"load_average": round(os.getloadavg()[0], 1)}
    for label, extra in (("table", []), ("json", ["--json"])):
        target = directory / "mappings" / f"crosswalk-{label}.yaml"
        argv = [sys.executable, "-m", "bridge.app.cli", "mappings", "discover"]
        started, cpu = time.monotonic(), _children_cpu()
        with (directory / f"{label}.out").open("wb") as out:
            subprocess.run([*argv, "--write", str(target), *extra], env=env, stdout=out, check=True)
        seconds[label] = round(time.monotonic() - started, 2)
        # CPU too: on a loaded machine the wall time is mostly waiting for a core
        seconds[f"{label}_cpu"] = round(_children_cpu() - cpu, 2)
    return seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="agents on each side")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-discover-") as directory:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=_serve, args=(child, directory, args.users))
        server.start()
        try:
            facts = parent.recv()
            print(f"seeded in {facts['seed_seconds']}s: {facts['made']}", file=sys.stderr)
            salesforce, servicenow = _adapters(facts)
            mappings = Path(directory) / "mappings"
            mappings.mkdir()
            for name in ("policies.yaml", "rules.yaml"):
                (mappings / name).write_text((SANDBOX_MAPPINGS / name).read_text())
            started = time.monotonic()
            holdings = read_both(salesforce, servicenow)
            read_seconds = time.monotonic() - started
            proposals = propose(holdings)
            written = write(mappings / "crosswalk.yaml", proposals, force=False)
            elapsed = time.monotonic() - started
            tables, problems = check_tables(mappings)
            command = _command(facts, Path(directory))
            parent.send("done")
            calls = parent.recv()
        finally:
            server.join(timeout=30)
            if server.is_alive():
                server.terminate()
    counts = summary(proposals)
    figures = {
        "users_per_side": args.users,
        "seeded": facts["made"],
        "elapsed_seconds": round(elapsed, 2),
        "command_seconds": command,
        "read_seconds": round(read_seconds, 2),
        "match_and_write_seconds": round(elapsed - read_seconds, 2),
        "api_calls": {
            "total": calls["salesforce"] + calls["servicenow"],
            "salesforce": calls["salesforce"],
            "servicenow": calls["servicenow"],
        },
        "outcomes": counts,
        "crosswalk_written": written.written,
        "crosswalk_users": len(tables.crosswalk.users) if tables else None,
        "crosswalk_problems": [str(p) for p in problems],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_seconds": TARGET_SECONDS,
        "api_calls_by_route": calls["by_route"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"{args.users} users per side: {figures['elapsed_seconds']}s "
        f"(reads {figures['read_seconds']}s, match + write {figures['match_and_write_seconds']}s; "
        f"target {TARGET_SECONDS}s), {figures['api_calls']['total']} API calls "
        f"(Salesforce {calls['salesforce']}, ServiceNow {calls['servicenow']}), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  `bridge mappings discover --write` as a process: {command}")
    for section, row in counts.items():
        print(f"  {section:<9} " + ", ".join(f"{n} {k}" for k, n in row.items()))
    print(f"  crosswalk: {figures['crosswalk_users']} users, problems {len(problems)}")
    return figures


if __name__ == "__main__":
    main()
