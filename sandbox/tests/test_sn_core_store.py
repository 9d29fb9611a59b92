"""The instance store: defaults, system fields, indexes, business-rule hooks, seed."""

from __future__ import annotations

import pytest

from bridge_sandbox import seed
from bridge_sandbox.servicenow.store import Instance, ServiceNowApiError
from bridge_sandbox.serving import Clock

SUPPORT = seed.QUEUES[0].sn_queue_sys_id
BILLING = seed.QUEUES[1].sn_queue_sys_id


@pytest.fixture
def inst() -> Instance:
    return Instance(Clock())


def test_insert_fills_defaults_numbers_and_system_fields(inst: Instance) -> None:
    first = inst.insert("awa_work_item", {"queue": SUPPORT, "rejected": True, "offer_count": 2})
    second = inst.insert("awa_work_item", {"queue": SUPPORT})
    assert (first["number"], second["number"]) == ("AWI0001001", "AWI0001002")
    assert first["state"] == "queued"
    assert first["active"] == "true"
    assert first["rejected"] == "true"
    assert first["offer_count"] == "2"
    assert first["sys_mod_count"] == "0"
    assert len(first["sys_id"]) == 32
    assert first["sys_created_by"] == "system"


def test_update_counts_and_keeps_indexes(inst: Instance) -> None:
    clock = inst.clock
    row = inst.insert("awa_work_item", {"queue": SUPPORT})
    clock.advance(5)
    updated = inst.update("awa_work_item", row["sys_id"], {"queue": BILLING, "sys_mod_count": "99"})
    assert updated["sys_mod_count"] == "1"
    assert updated["sys_updated_on"] > row["sys_updated_on"]
    assert inst.where("awa_work_item", queue=SUPPORT) == []
    assert [r["sys_id"] for r in inst.where("awa_work_item", queue=BILLING)] == [row["sys_id"]]
    inst.delete("awa_work_item", row["sys_id"])
    assert inst.where("awa_work_item", queue=BILLING) == []


def test_rows_by_updated(inst: Instance) -> None:
    a = inst.insert("interaction", {})
    b = inst.insert("interaction", {})
    inst.clock.advance(1)
    inst.update("interaction", a["sys_id"], {"state": "on_hold"})
    assert [r["sys_id"] for r in inst.rows_by_updated("interaction")] == [b["sys_id"], a["sys_id"]]
    assert [r["sys_id"] for r in inst.rows("interaction")] == [a["sys_id"], b["sys_id"]]


def test_returned_rows_are_copies(inst: Instance) -> None:
    row = inst.insert("interaction", {})
    row["state"] = "closed_complete"
    inst.get("interaction", row["sys_id"])["state"] = "wrap_up"  # type: ignore[index]
    assert inst.get("interaction", row["sys_id"])["state"] == "new"  # type: ignore[index]


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda i: i.insert("nope", {}), 400, "Invalid table nope"),
        (lambda i: i.update("interaction", "missing", {}), 404, "No Record found"),
        (lambda i: i.delete("interaction", "missing"), 404, "No Record found"),
        (lambda i: i.insert("interaction", {"sys_id": "a b"}), 400, "Invalid sys_id"),
        (lambda i: i.insert("awa_queue", {"sys_id": SUPPORT}), 403, "Operation Failed"),
        (
            lambda i: i.insert("awa_queue", {}, user=seed.AGENTS[0].sn_user_sys_id),
            403,
            "Operation Failed",
        ),
    ],
)
def test_errors(inst: Instance, call: object, status: int, message: str) -> None:
    with pytest.raises(ServiceNowApiError) as caught:
        call(inst)  # type: ignore[operator]
    assert (caught.value.status, caught.value.message) == (status, message)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        self.calls.append(f"before_insert {table}")
        if table == "interaction":
            row["short_description"] = "set by rule"
        if row.get("correlation_id") == "refuse":
            raise ServiceNowApiError(403, "Operation Failed", "refused by rule")

    def after_insert(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        self.calls.append(f"after_insert {table}")

    def before_update(
        self,
        inst: Instance,
        table: str,
        old: dict[str, str],
        changes: dict[str, str],
        user: str | None,
    ) -> None:
        self.calls.append(f"before_update {old['state']}->{changes.get('state')}")
        changes["active"] = "false"

    def after_update(
        self, inst: Instance, table: str, old: dict[str, str], new: dict[str, str], user: str | None
    ) -> None:
        self.calls.append(f"after_update {new['active']}")

    def before_delete(
        self, inst: Instance, table: str, row: dict[str, str], user: str | None
    ) -> None:
        self.calls.append(f"before_delete {table}")


def test_behaviours_run_in_order_and_may_change_or_refuse(inst: Instance) -> None:
    rules = _Recorder()
    inst.add_behaviour(rules)
    row = inst.insert("interaction", {"short_description": "x"})
    assert row["short_description"] == "set by rule"
    updated = inst.update("interaction", row["sys_id"], {"state": "closed_complete"})
    assert updated["active"] == "false"
    inst.delete("interaction", row["sys_id"])
    with pytest.raises(ServiceNowApiError):
        inst.insert("interaction", {"correlation_id": "refuse"})
    assert inst.rows("interaction") == []
    assert rules.calls == [
        "before_insert interaction",
        "after_insert interaction",
        "before_update new->closed_complete",
        "after_update false",
        "before_delete interaction",
        "before_insert interaction",
    ]


@pytest.mark.parametrize(
    ("table", "field", "value", "display"),
    [
        ("awa_work_item", "queue", SUPPORT, "Support"),
        ("awa_work_item", "state", "pending_accept", "Pending Accept"),
        (
            "awa_work_item",
            "cancel_reason",
            "transfer_rejected",
            "Transfer was canceled or rejected",
        ),
        ("awa_work_item", "assigned_to", seed.AGENTS[2].sn_user_sys_id, "Carol Chen"),
        ("awa_work_item", "assigned_to", "", ""),
        ("awa_work_item", "assigned_to", "f" * 32, ""),
        ("interaction", "state", "closed_abandoned", "Closed Abandoned"),
        ("interaction", "short_description", "as is", "as is"),
    ],
)
def test_display_value(inst: Instance, table: str, field: str, value: str, display: str) -> None:
    assert inst.display_value(table, field, value) == display


def test_seed(inst: Instance) -> None:
    integration = inst.user_by_name(seed.SN_INTEGRATION_USER)
    assert integration is not None
    assert "awa_integration_user" in inst.user_roles(integration["sys_id"])
    for agent in seed.AGENTS:
        assert inst.user_roles(agent.sn_user_sys_id) == {"awa_agent", "awa_external_user"}
        presence = inst.where("awa_agent_presence", agent=agent.sn_user_sys_id)
        assert [p["current_presence_state"] for p in presence] == [seed.SN_PRESENCE_AVAILABLE]
    queues = {q["external_id"]: q["sys_id"] for q in inst.rows("awa_queue")}
    assert queues == {q.sn_external_id: q.sn_queue_sys_id for q in seed.QUEUES}
    available = inst.where("awa_presence_state", name="Available")
    assert available[0]["available"] == "true"
    assert inst.check_password(seed.SN_INTEGRATION_USER, "wrong") is None


def test_reset_returns_to_the_seed(inst: Instance) -> None:
    inst.insert("interaction", {})
    inst.delete("awa_queue", SUPPORT)
    inst.reset()
    assert inst.rows("interaction") == []
    assert inst.get("awa_queue", SUPPORT) is not None
    assert inst.insert("interaction", {})["number"] == "IMS0001001"
    assert Instance(Clock(), seed=False).rows("sys_user") == []
