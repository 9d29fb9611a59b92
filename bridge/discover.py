"""``bridge mappings discover``: read users, queues and service channels from both systems
(paged), match them (``bridge.domain.discovery``), report, and write a crosswalk.

Reads go through the adapters' protocols: Salesforce SOQL pages by ``nextRecordsUrl``;
ServiceNow keyset pages on ``sys_id`` (offset pages skip or repeat rows when the table
changes between pages).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bridge.domain.discovery import (
    Merge,
    Outcome,
    Proposal,
    SfChannel,
    SfQueue,
    SfUser,
    SnAgent,
    SnChannel,
    SnQueue,
    discover_channels,
    discover_queues,
    discover_users,
    merge,
)
from bridge.domain.mapping import (
    AWA_AGENT_ROLES,
    CROSSWALK_FILE,
    POLICIES_FILE,
    RULES_FILE,
    Problem,
    check_tables,
    default_directory,
)

if TYPE_CHECKING:
    from bridge.adapters.salesforce.client import SalesforceApi
    from bridge.adapters.servicenow.client import ServiceNowApi

SN_PAGE = 1000
# Called with (what is being read, records read so far).
Progress = Callable[[str, int], None]


def _quiet(task: str, done: int) -> None:
    del task, done


def _counted(rows: Iterator[dict[str, Any]], task: str, progress: Progress) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        out.append(row)
        if len(out) % 200 == 0:
            progress(task, len(out))
    progress(task, len(out))
    return out


def sn_pages(
    sn: ServiceNowApi,
    table: str,
    query: str,
    fields: Sequence[str],
    *,
    page: int | None = None,
) -> Iterator[dict[str, str]]:
    """Every row of an encoded query, keyset pages on sys_id."""
    page = page or SN_PAGE
    after = ""
    while True:
        condition = f"sys_id>{after}" if after else ""
        encoded = "^".join(part for part in (query, condition) if part)
        rows = sn.query(
            table, f"{encoded}^ORDERBYsys_id" if encoded else "ORDERBYsys_id", fields, limit=page
        )
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1]["sys_id"]


@dataclass(frozen=True)
class Holdings:
    """What both systems hold, as discovery compares it."""

    sf_users: list[SfUser]
    sf_queues: list[SfQueue]
    sf_channels: list[SfChannel]
    sn_agents: list[SnAgent]
    sn_queues: list[SnQueue]
    sn_channels: list[SnChannel]


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def read_salesforce(
    sf: SalesforceApi, progress: Progress = _quiet
) -> tuple[list[SfUser], list[SfQueue], list[SfChannel]]:
    users = [
        SfUser(
            r["Id"],
            r.get("Username") or "",
            r.get("Name") or "",
            _text(r.get("Email")),
            _text(r.get("FederationIdentifier")),
        )
        for r in _counted(
            sf.query(
                "SELECT Id, Username, Name, Email, FederationIdentifier FROM User "
                "WHERE IsActive = true AND UserType = 'Standard' ORDER BY Id"
            ),
            "Salesforce users",
            progress,
        )
    ]
    models = {
        r["Id"]: r.get("RoutingModel")
        for r in sf.query("SELECT Id, RoutingModel FROM QueueRoutingConfig")
    }
    queues = [
        SfQueue(
            r["Id"],
            r.get("Name") or "",
            r.get("DeveloperName") or "",
            models.get(r["QueueRoutingConfigId"]),
        )
        for r in _counted(
            sf.query(
                "SELECT Id, Name, DeveloperName, QueueRoutingConfigId FROM Group "
                "WHERE Type = 'Queue' AND QueueRoutingConfigId != null ORDER BY Id"
            ),
            "Salesforce queues",
            progress,
        )
    ]
    channels = [
        SfChannel(
            r["Id"],
            r.get("DeveloperName") or "",
            r.get("MasterLabel") or "",
            r.get("RelatedEntity") or "",
        )
        for r in sf.query(
            "SELECT Id, DeveloperName, MasterLabel, RelatedEntity FROM ServiceChannel"
        )
    ]
    progress("Salesforce service channels", len(channels))
    return users, queues, channels


def read_servicenow(
    sn: ServiceNowApi, progress: Progress = _quiet, *, page: int | None = None
) -> tuple[list[SnAgent], list[SnQueue], list[SnChannel]]:
    page = page or SN_PAGE
    roles = [
        r["sys_id"]
        for r in sn.query("sys_user_role", f"nameIN{','.join(AWA_AGENT_ROLES)}", ("name",))
    ]
    agents_ids: set[str] = set()
    if roles:
        grants = sn_pages(sn, "sys_user_has_role", f"roleIN{','.join(roles)}", ("user",), page=page)
        agents_ids = {g["user"] for g in _counted(grants, "ServiceNow role grants", progress)}
    users = _counted(
        sn_pages(sn, "sys_user", "active=true", ("user_name", "name", "email"), page=page),
        "ServiceNow users",
        progress,
    )
    agents = [
        SnAgent(u["sys_id"], u.get("user_name", ""), u.get("name", ""), _text(u.get("email")))
        for u in users
        if u["sys_id"] in agents_ids
    ]
    queues = [
        SnQueue(q["sys_id"], q.get("name", ""), _text(q.get("external_id")))
        for q in _counted(
            sn_pages(sn, "awa_queue", "active=true", ("name", "external_id"), page=page),
            "AWA queues",
            progress,
        )
    ]
    channels = [
        SnChannel(c["sys_id"], c.get("name", ""), c.get("work_item_table") or "interaction")
        for c in sn_pages(
            sn, "awa_service_channel", "active=true", ("name", "work_item_table"), page=page
        )
    ]
    progress("AWA service channels", len(channels))
    return agents, queues, channels


def read_both(sf: SalesforceApi, sn: ServiceNowApi, progress: Progress = _quiet) -> Holdings:
    sf_users, sf_queues, sf_channels = read_salesforce(sf, progress)
    sn_agents, sn_queues, sn_channels = read_servicenow(sn, progress)
    return Holdings(sf_users, sf_queues, sf_channels, sn_agents, sn_queues, sn_channels)


def propose(holdings: Holdings) -> list[Proposal]:
    return [
        *discover_queues(holdings.sf_queues, holdings.sn_queues),
        *discover_users(holdings.sf_users, holdings.sn_agents),
        *discover_channels(holdings.sf_channels, holdings.sn_channels),
    ]


def summary(proposals: Sequence[Proposal]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for p in proposals:
        counts = out.setdefault(p.section, {o.value: 0 for o in Outcome})
        counts[p.outcome.value] += 1
    return out


# --- writing ----------------------------------------------------------------------------

HEADER = (
    "# Which Salesforce record corresponds to which ServiceNow record.\n"
    "# Written by `bridge mappings discover`; rows written by hand are kept as they are\n"
    "# (unless --force). Check with `bridge mappings check --live`.\n"
)


def read_crosswalk(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def render(crosswalk: Mapping[str, Any]) -> str:
    return HEADER + "\n" + yaml.safe_dump(dict(crosswalk), sort_keys=False, allow_unicode=True)


def validate(path: Path, text: str) -> list[Problem]:
    """Problems the tables' loader finds in ``text`` as ``path``'s crosswalk, with the
    policies and rules beside it (else the packaged ones)."""
    beside = path.parent
    own = all((beside / name).exists() for name in (POLICIES_FILE, RULES_FILE))
    source = beside if own else default_directory()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / CROSSWALK_FILE).write_text(text, encoding="utf-8")
        for name in (POLICIES_FILE, RULES_FILE):
            shutil.copyfile(source / name, directory / name)
        _, problems = check_tables(directory)
    return [Problem(str(path), p.line, p.key, p.message) for p in problems]


@dataclass
class Written:
    path: Path
    merge: Merge
    problems: list[Problem]
    written: bool


def write(path: Path, proposals: Sequence[Proposal], *, force: bool) -> Written:
    """Merge the matches into ``path`` and write it if the result validates."""
    result = merge(read_crosswalk(path), proposals, force=force)
    text = render(result.crosswalk)
    problems = validate(path, text)
    if not problems:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Written(path, result, problems, not problems)
