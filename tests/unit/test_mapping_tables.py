"""Loading and validating mappings/: every problem with file, line and key."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.app.cli import app
from bridge.domain.mapping import (
    Problem,
    Tables,
    check_live,
    check_tables,
    default_directory,
    load_tables,
)
from bridge.errors import ConfigError
from bridge_sandbox import seed
from bridge_sandbox.salesforce.ids import to18


@pytest.fixture
def tables_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(default_directory(), target)
    return target


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def rule_key(rule_id: str) -> str:
    """The key of a rule of the default rules.yaml (its place in the list), by its id."""
    text = (default_directory() / "rules.yaml").read_text()
    ids = [
        line.split("id:", 1)[1].strip() for line in text.splitlines() if line.startswith("  - id: ")
    ]
    return f"rules.{ids.index(rule_id)}"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_default_tables_load() -> None:
    tables = load_tables()
    assert len(tables.crosswalk.queues) == len(seed.QUEUES)
    assert len(tables.crosswalk.users) == len(seed.AGENTS)
    assert {r.id for r in tables.rules} == {r.id for r in tables.rules}  # ids unique: loaded
    assert len({r.id for r in tables.rules}) == len(tables.rules)


def test_crosswalk_holds_the_seed_ids() -> None:
    cw = load_tables().crosswalk
    assert [
        (q.name, q.direction, to18(q.sf_queue_id), q.sn_queue_sys_id, q.sn_external_id)
        for q in cw.queues
    ] == [
        (q.name, q.direction, q.sf_queue_id, q.sn_queue_sys_id, q.sn_external_id)
        for q in seed.QUEUES
    ]
    assert [(to18(u.sf_user_id), u.sn_user_sys_id) for u in cw.users] == [
        (a.sf_user_id, a.sn_user_sys_id) for a in seed.AGENTS
    ]
    assert [
        (
            c.name,
            to18(c.sf_service_channel_id),
            c.sn_service_channel_sys_id,
            c.sn_document_table,
            c.sf_work_item_type,
        )
        for c in cw.channels
    ] == [
        (
            c.name,
            c.sf_service_channel_id,
            c.sn_service_channel_sys_id,
            c.sn_document_table,
            c.sf_related_entity,
        )
        for c in seed.CHANNELS
    ]


def test_lookups_accept_both_id_forms() -> None:
    tables = load_tables()
    support = seed.QUEUES[0]
    assert tables.queue_by_sf(support.sf_queue_id[:15]) is tables.queue_by_sf(support.sf_queue_id)
    assert tables.queue_by_sn("SUPPORT_EXT") is tables.queue_by_sn(support.sn_queue_sys_id)
    assert tables.user_by_sf(seed.AGENTS[0].sf_user_id[:15]) is not None


@dataclass
class Broken:
    name: str
    file: str
    old: str
    new: str
    key: str
    message: str
    line_needle: str = ""  # the line the problem points at; default: the new text


BROKEN = [
    Broken(
        "unknown operation",
        "rules.yaml",
        "- op: route",
        "- op: reroute",
        f"{rule_key('sn2sf.work-item-queued')}.actions.0.op",
        "Input should be",
    ),
    Broken(
        "unknown trigger",
        "rules.yaml",
        "triggers: [work_item.queued]",
        "triggers: [work_item.parked]",
        f"{rule_key('sn2sf.work-item-queued')}.triggers.0",
        "Input should be",
    ),
    Broken(
        "unknown state",
        "rules.yaml",
        "states: [routing]\n    open_segment: route",
        "states: [waiting]\n    open_segment: route",
        f"{rule_key('sn2sf.agent-work-assigned')}.states",
        "unknown state(s) ['waiting']",
        "states: [waiting]",
    ),
    Broken(
        "state of the other direction",
        "rules.yaml",
        "states: [routing]\n    open_segment: route",
        "states: [routing, offered]\n    open_segment: route",
        f"{rule_key('sn2sf.agent-work-assigned')}.states",
        "sn_to_sf never is 'offered'",
        "states: [routing, offered]",
    ),
    Broken(
        "duplicate rule",
        "rules.yaml",
        "triggers: [psr.created]\n    states: [offered,",
        "triggers: [psr.created]\n    states: [none, offered,",
        "rules.1.states",
        "duplicate rule: sf_to_sn psr.created none is already handled by 'sf2sn.psr-created'",
        "states: [none, offered,",
    ),
    Broken(
        "duplicate rule id",
        "rules.yaml",
        "id: sf2sn.psr-seen-again",
        "id: sf2sn.psr-created  # again",
        "rules.1.id",
        "duplicate rule id 'sf2sn.psr-created'",
    ),
    Broken(
        "unknown parameter",
        "rules.yaml",
        "with: {enable_auto_assign: true, target: event_agent}",
        "with: {enable_auto_assign: true, agent: event_agent}",
        f"{rule_key('sf2sn.agent-work-opened-transfer')}.actions.0.with.agent",
        "transfer takes no parameter 'agent' (takes: target, enable_auto_assign)",
    ),
    Broken(
        "bad parameter value",
        "rules.yaml",
        "with: {enable_auto_assign: true, target: event_agent}",
        "with: {enable_auto_assign: true, target: everyone}",
        f"{rule_key('sf2sn.agent-work-opened-transfer')}.actions.0.with.target",
        "'everyone' is not one of queue_agents, event_agent",
    ),
    Broken(
        "event agent of an event without one",
        "rules.yaml",
        "triggers: [agent_work.opened]\n    states: [assigned]",
        "triggers: [agent_work.opened, interaction.new]\n    states: [assigned]",
        f"{rule_key('sn2sf.agent-work-opened')}.actions.0.with.target",
        "event_agent needs agent_work triggers",
        "with: {target: event_agent, enable_auto_assign: true}",
    ),
    Broken(
        "uncovered combination",
        "rules.yaml",
        "states: [active, transferring]\n    close_segment: closed",
        "states: [transferring]\n    close_segment: closed",
        "rules",
        "no rule for sf_to_sn agent_work.closed in state(s) active",
        "rules:",
    ),
    Broken(
        "queue mapped twice",
        "crosswalk.yaml",
        "sf_queue_id: 00G5g0000000002EAA",
        "sf_queue_id: 00G5g0000000001",
        "queues.1.sf_queue_id",
        "sf queue id '00G5g0000000001' mapped twice (also queues[0])",
        "00G5g0000000001  # Billing",
    ),
    Broken(
        "user sys_id of the wrong shape",
        "crosswalk.yaml",
        "sn_user_sys_id: a9010da35d515caaa430b374dcb3a3da",
        "sn_user_sys_id: alice",
        "users.0.sn_user_sys_id",
        "'alice' is not a ServiceNow sys_id",
    ),
    Broken(
        "invalid Salesforce id",
        "crosswalk.yaml",
        "sf_user_id: 0055g0000000001AAA",
        "sf_user_id: 0055g0000000001ZZZ",
        "users.0.sf_user_id",
        "'0055g0000000001ZZZ' is not a valid 15/18-character Salesforce id",
    ),
    Broken(
        "Salesforce id of another object",
        "crosswalk.yaml",
        "sf_user_id: 0055g0000000001AAA",
        "sf_user_id: 00G5g0000000009EAA",
        "users.0.sf_user_id",
        "is not a User id (prefix 005)",
    ),
    Broken(
        "unknown fallback queue",
        "crosswalk.yaml",
        "fallback_queue: Billing",
        "fallback_queue: Nowhere",
        "queues.0.fallback_queue",
        "unknown queue 'Nowhere'",
    ),
    Broken(
        "unknown eligible agent",
        "crosswalk.yaml",
        "fallback_queue: Billing",
        "fallback_queue: Billing\n    eligible_agents: [alice.ahmed, zed]",
        "queues.0.eligible_agents.1",
        "unknown user 'zed'",
        "eligible_agents",
    ),
    Broken(
        "missing field",
        "crosswalk.yaml",
        "    sn_document_table: interaction\n",
        "",
        "channels.0.sn_document_table",
        "Field required",
        "- name: Messaging",
    ),
    Broken(
        "unknown policy",
        "policies.yaml",
        "reoffer_limit: 3",
        "reoffer_limt: 3",
        "reoffer_limt",
        "Extra inputs are not permitted",
    ),
    Broken(
        "bad policy value",
        "policies.yaml",
        "display_option: card_and_tab",
        "display_option: popup",
        "display_option",
        "Input should be 'card_only'",
    ),
    Broken(
        "duplicate YAML key",
        "policies.yaml",
        "reoffer_limit: 3",
        "reoffer_limit: 3\nreoffer_limit: 4",
        "reoffer_limit",
        "duplicate key (first at line 7)",
        "reoffer_limit: 4",
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.name for c in BROKEN])
def test_problem_names_file_line_and_key(case: Broken, tables_dir: Path) -> None:
    path = tables_dir / case.file
    edit(path, case.old, case.new)
    tables, problems = check_tables(tables_dir)
    assert tables is None
    line = line_of(path, case.line_needle or case.new.strip().splitlines()[0])
    matching = [p for p in problems if p.key == case.key and case.message in p.message]
    assert matching, "\n".join(str(p) for p in problems)
    assert matching[0].file == case.file
    assert matching[0].line == line


def test_invalid_yaml(tables_dir: Path) -> None:
    (tables_dir / "policies.yaml").write_text("reoffer_limit: 3\n  bad: [\n")
    _, problems = check_tables(tables_dir)
    assert [(p.file, p.line) for p in problems] == [("policies.yaml", 2)]
    assert "not valid YAML" in problems[0].message


def test_missing_and_empty_files(tables_dir: Path) -> None:
    (tables_dir / "rules.yaml").unlink()
    (tables_dir / "policies.yaml").write_text("")
    _, problems = check_tables(tables_dir)
    assert [(p.file, "cannot read" in p.message or "empty" in p.message) for p in problems] == [
        ("policies.yaml", True),
        ("rules.yaml", True),
    ]


def test_config_error_lists_every_problem_one_per_line(tables_dir: Path) -> None:
    edit(tables_dir / "policies.yaml", "reoffer_limit: 3", "reoffer_limit: -1")
    edit(tables_dir / "crosswalk.yaml", "fallback_queue: Billing", "fallback_queue: Nowhere")
    with pytest.raises(ConfigError) as info:
        load_tables(tables_dir)
    lines = info.value.message.splitlines()
    assert lines[0] == "2 problem(s) in the mapping tables:"
    assert lines[1].startswith("crosswalk.yaml:11: queues.0.fallback_queue: unknown queue")
    assert lines[2].startswith("policies.yaml:7: reoffer_limit: Input should be greater")


def test_problem_text() -> None:
    assert str(Problem("rules.yaml", 3, "rules.0.id", "bad")) == "rules.yaml:3: rules.0.id: bad"
    assert str(Problem("rules.yaml", None, "", "gone")) == "rules.yaml: gone"


# --- live check ------------------------------------------------------------------------


@dataclass
class FakeDirectory:
    """What the two systems would answer; starts as the seed."""

    sf_queues: set[str] = field(default_factory=lambda: {q.sf_queue_id for q in seed.QUEUES})
    sf_users: set[str] = field(default_factory=lambda: {a.sf_user_id for a in seed.AGENTS})
    sf_channels: set[str] = field(
        default_factory=lambda: {c.sf_service_channel_id for c in seed.CHANNELS}
    )
    queues: dict[str, str | None] = field(
        default_factory=lambda: {q.sn_queue_sys_id: q.sn_external_id for q in seed.QUEUES}
    )
    roles: dict[str, set[str]] = field(
        default_factory=lambda: {
            a.sn_user_sys_id: {"awa_agent", "awa_external_user"} for a in seed.AGENTS
        }
    )

    def sf_queue_ids(self) -> set[str]:
        return self.sf_queues

    def sf_user_ids(self) -> set[str]:
        return self.sf_users

    def sf_service_channel_ids(self) -> set[str]:
        return self.sf_channels

    def sn_queues(self) -> dict[str, str | None]:
        return self.queues

    def sn_user_roles(self) -> dict[str, set[str]]:
        return self.roles


def _live(directory: FakeDirectory) -> list[str]:
    return [str(p) for p in check_live(load_tables(), directory)]


def test_live_check_passes_on_the_seed() -> None:
    assert _live(FakeDirectory()) == []


def test_live_check_reports_each_missing_thing() -> None:
    fake = FakeDirectory()
    support, billing, _ = seed.QUEUES
    alice, bob, carol, _dan = seed.AGENTS
    fake.sf_queues.discard(support.sf_queue_id)
    fake.queues[billing.sn_queue_sys_id] = None
    fake.sf_users.discard(bob.sf_user_id)
    fake.roles[alice.sn_user_sys_id] = {"awa_agent"}
    del fake.roles[carol.sn_user_sys_id]
    fake.sf_channels.discard(seed.CHANNELS[1].sf_service_channel_id)
    cw = default_directory() / "crosswalk.yaml"
    assert _live(fake) == [
        f"crosswalk.yaml:{line_of(cw, '- name: Support')}: queues.0: "
        f"Salesforce queue {support.sf_queue_id} not found",
        f"crosswalk.yaml:{line_of(cw, '- name: Billing')}: queues.1: "
        "no awa_queue with external_id 'BILLING_EXT'",
        f"crosswalk.yaml:{line_of(cw, '- name: alice.ahmed')}: users.0: "
        f"sys_user {alice.sn_user_sys_id} lacks role(s) ['awa_external_user']",
        f"crosswalk.yaml:{line_of(cw, '- name: bob.brown')}: users.1: "
        f"Salesforce user {bob.sf_user_id} not found",
        f"crosswalk.yaml:{line_of(cw, '- name: carol.chen')}: users.2: "
        f"sys_user {carol.sn_user_sys_id} not found",
        f"crosswalk.yaml:{line_of(cw, '- name: Case')}: channels.1: "
        f"ServiceChannel {seed.CHANNELS[1].sf_service_channel_id} not found",
    ]


# --- the command -----------------------------------------------------------------------


def test_check_command_ok() -> None:
    result = CliRunner().invoke(app, ["mappings", "check", "--dir", str(default_directory())])
    tables: Tables = load_tables()
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"OK: {len(tables.rules)} rules, 3 queues, 4 users")


def test_check_command_problems(tables_dir: Path) -> None:
    edit(tables_dir / "crosswalk.yaml", "fallback_queue: Billing", "fallback_queue: Nowhere")
    result = CliRunner().invoke(app, ["mappings", "check", "--dir", str(tables_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "crosswalk.yaml:11: queues.0.fallback_queue: unknown queue 'Nowhere'"
    )


def test_check_command_json(tables_dir: Path) -> None:
    edit(tables_dir / "policies.yaml", "reoffer_limit: 3", "reoffer_limt: 3")
    result = CliRunner().invoke(app, ["mappings", "check", "--dir", str(tables_dir), "--json"])
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["ok"] is False
    assert body["problems"] == [
        {
            "file": "policies.yaml",
            "line": 7,
            "key": "reoffer_limt",
            "message": "Extra inputs are not permitted",
        }
    ]
