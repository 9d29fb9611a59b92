"""A simulated contact centre: customers and agents acting on both sandboxes while a
bridge routes between them.

A ``Scenario`` is a start (a customer opens a conversation on one side) and a list of
``Step``s. Each step waits until the bridge's effect it needs is visible (an offer in AWA,
an AgentWork in Salesforce, the ledger's correlation state) and then acts as an agent or
customer would. The driver never blocks: ``ContactCentre.advance`` tries the current step
once and the caller pumps the bridge in between (a test calls ``runtime.step()``, the demo
sleeps while the daemon runs). A step that waits more than ``max_pumps`` rounds raises
``Stuck`` naming what did not happen.

``observe`` reads the final state of both systems and the ledger in the same shape as a
scenario's ``expected``, so a test (or the demo) compares the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.ledger import rows
from bridge.ledger.sql import SqlLedger, SqlTx
from bridge_sandbox import seed
from bridge_sandbox.salesforce.app import SalesforceSandbox
from bridge_sandbox.servicenow.app import ServiceNowSandbox

SF_QUEUE = "Support_External"
SF_TRANSFER_QUEUE = "Billing_External"
SN_QUEUE = "SF_OVERFLOW"
_SF_USER_OF_SN = {a.sn_user_sys_id: a.sf_user_id for a in seed.AGENTS}


class Stuck(RuntimeError):
    """A scenario step waited longer than allowed for the bridge's effect."""


@dataclass
class Conversation:
    """One customer conversation as the simulation follows it."""

    scenario: Scenario
    sf_work_item_id: str | None = None
    interaction: str | None = None
    step: int = 0
    waited: int = 0
    marks: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.step >= len(self.scenario.steps)


Check = Callable[["ContactCentre", Conversation], bool]
Act = Callable[["ContactCentre", Conversation], None]


@dataclass(frozen=True)
class Step:
    """Wait until ``ready`` (described by ``awaits``), then ``act``."""

    awaits: str
    ready: Check
    act: Act


@dataclass(frozen=True)
class Observed:
    """Both systems and the ledger, as far as a scenario's outcome goes."""

    correlation_state: str | None
    segment_outcomes: tuple[str | None, ...]
    psr_open: bool
    agent_work: tuple[str, ...]
    work_items: tuple[str, ...]
    interaction_state: str | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """``minimum_calls``: the fewest calls the bridge's commands can make for it (one per
    record it must create or change in either system, no reads; polling not counted)."""

    name: str
    start: Callable[[ContactCentre, Scenario], Conversation]
    steps: tuple[Step, ...]
    expected: Observed
    minimum_calls: int


class ContactCentre:
    """Customers and agents on both sandboxes; ``pump`` lets the bridge work a round."""

    def __init__(
        self,
        sf: SalesforceSandbox,
        sn: ServiceNowSandbox,
        ledger: SqlLedger,
        pump: Callable[[], object],
        *,
        max_pumps: int = 12,
    ) -> None:
        self.sf = sf
        self.sn = sn
        self.ledger = ledger
        self.pump = pump
        self.max_pumps = max_pumps

    # -- driving ----------------------------------------------------------------------
    def begin(self, scenario: Scenario) -> Conversation:
        return scenario.start(self, scenario)

    def advance(self, conv: Conversation) -> bool:
        """Take every step that is ready now; True once the scenario is over."""
        while not conv.done and self._try(conv):
            pass
        return conv.done

    def drive(self, conv: Conversation, *, until_step: int | None = None) -> Conversation:
        """Pump until the conversation is over (or has taken ``until_step`` steps)."""
        stop = len(conv.scenario.steps) if until_step is None else until_step
        while conv.step < stop:
            if not self._try(conv):
                self.pump()
        return conv

    def _try(self, conv: Conversation) -> bool:
        """The current step, if it is ready; counts the rounds it has waited."""
        step = conv.scenario.steps[conv.step]
        if step.ready(self, conv):
            step.act(self, conv)
            conv.step, conv.waited = conv.step + 1, 0
            return True
        conv.waited += 1
        if conv.waited > self.max_pumps:
            raise Stuck(
                f"{conv.scenario.name}: step {conv.step + 1} waited {self.max_pumps} rounds "
                f"for {step.awaits}; now: {self.observe(conv)}"
            )
        return False

    def run(self, scenario: Scenario) -> Conversation:
        """Start one conversation and drive it to its end."""
        return self.drive(self.begin(scenario))

    def run_many(self, scenarios: Iterable[Scenario]) -> list[Conversation]:
        """Start every conversation, then pump until all of them are over."""
        convs = [self.begin(s) for s in scenarios]
        while not all([self.advance(c) for c in convs if not c.done] or [True]):
            self.pump()
        return convs

    # -- what both systems show -------------------------------------------------------
    def agent_work(self, conv: Conversation) -> list[dict[str, Any]]:
        """The conversation's AgentWork, oldest first."""
        self._learn_interaction(conv)
        if conv.sf_work_item_id is None:
            return []
        found = self.sf.org.where("AgentWork", WorkItemId=conv.sf_work_item_id)
        return sorted(found, key=lambda w: (w["CreatedDate"], w["Id"]))

    def assigned_work(self, conv: Conversation) -> dict[str, Any] | None:
        """The newest Assigned AgentWork not yet acted on in this conversation; once an
        AWA agent accepted, the one for that agent's Salesforce user."""
        seen: set[str] = conv.marks.setdefault("agent_work_seen", set())
        accepted_by: list[str] = conv.marks.get("sn_agents") or [""]
        user = _SF_USER_OF_SN.get(accepted_by[-1])
        candidates = [
            w
            for w in self.agent_work(conv)
            if w["Status"] == "Assigned" and w["Id"] not in seen and user in (None, w["UserId"])
        ]
        return candidates[-1] if candidates else None

    def opened_work(self, conv: Conversation) -> dict[str, Any] | None:
        return next((w for w in reversed(self.agent_work(conv)) if w["Status"] == "Opened"), None)

    def psr_open(self, conv: Conversation) -> bool:
        self._learn_interaction(conv)
        if conv.sf_work_item_id is None:
            return False
        return bool(self.sf.org.where("PendingServiceRouting", WorkItemId=conv.sf_work_item_id))

    def work_items(self, conv: Conversation) -> list[dict[str, str]]:
        self._learn_interaction(conv)
        return [] if conv.interaction is None else self.sn.control.work_items(conv.interaction)

    def offer(self, conv: Conversation) -> dict[str, str] | None:
        """The conversation's AWA work item pending accept, if a new one is there."""
        seen = conv.marks.setdefault("offers_seen", set())
        for item in self.work_items(conv):
            key = (item["sys_id"], item["offer_count"])
            if item["state"] == "pending_accept" and item["active"] == "true" and key not in seen:
                return item
        return None

    def interaction_state(self, conv: Conversation) -> str | None:
        self._learn_interaction(conv)
        if conv.interaction is None:
            return None
        return self.sn.control.interaction(conv.interaction)["state"]

    def correlation(self, conv: Conversation) -> rows.Correlation | None:
        key = conv.sf_work_item_id or conv.interaction
        if key is None:
            return None
        with self.ledger.reading() as tx:
            return tx.correlations.find_row(key)

    def bridge_saw(self, source_event_id: str) -> bool:
        """Has the bridge's intake recorded this event?"""
        with self.ledger.reading() as tx:
            return tx.lookups.inbox_has(source_event_id)

    def correlation_state(self, conv: Conversation) -> str | None:
        corr = self.correlation(conv)
        return None if corr is None else corr.state

    def _learn_interaction(self, conv: Conversation) -> None:
        if conv.interaction is None and conv.sf_work_item_id is not None:
            found = self.sn.instance.where("interaction", correlation_id=conv.sf_work_item_id)
            if found:
                conv.interaction = found[0]["sys_id"]
        if conv.sf_work_item_id is None and conv.interaction is not None:
            item = self.sf.omni.conversation(conv.interaction)
            if item is not None:
                conv.sf_work_item_id = item["Id"]

    def observe(self, conv: Conversation) -> Observed:
        """Final state of both systems and the ledger timeline of the conversation."""
        corr = self.correlation(conv)
        outcomes: tuple[str | None, ...] = ()
        problems: list[str] = []
        if corr is not None:
            with self.ledger.reading() as tx:
                segments = tx.correlations.segment_rows(corr.id)
                outcomes = tuple(s.outcome for s in segments)
                problems = ledger_problems(tx, corr.id)
        return Observed(
            correlation_state=None if corr is None else corr.state,
            segment_outcomes=outcomes,
            psr_open=self.psr_open(conv),
            agent_work=tuple(w["Status"] for w in self.agent_work(conv)),
            work_items=tuple(i["state"] for i in self.work_items(conv)),
            interaction_state=self.interaction_state(conv),
            problems=tuple(problems),
        )


def ledger_problems(tx: SqlTx, correlation_id: str) -> list[str]:
    """Dead or unfinished commands and error events of a correlation, as text."""
    detail = tx.audit.correlation_detail(correlation_id)
    problems = [
        f"command {c.operation} {c.status}: {c.error}"
        for c in detail.commands
        if c.status in ("dead", "pending", "claimed", "failed")
    ]
    problems += [
        f"event {e.source_event_id} {e.status}: {e.error}"
        for e in detail.events
        if e.status in ("error", "pending")
    ]
    return problems


# -- starts ---------------------------------------------------------------------------------


def customer_in_salesforce(cc: ContactCentre, scenario: Scenario) -> Conversation:
    """A customer starts a conversation on a Salesforce external-routing queue."""
    started = cc.sf.control.start_conversation(SF_QUEUE)
    return Conversation(scenario, sf_work_item_id=started["work_item_id"])


def customer_in_servicenow(cc: ContactCentre, scenario: Scenario) -> Conversation:
    """A customer starts a conversation on the AWA queue that overflows to Salesforce."""
    started = cc.sn.control.create_interaction(SN_QUEUE, f"scenario {scenario.name}")
    return Conversation(scenario, interaction=started["interaction"])


# -- steps ----------------------------------------------------------------------------------


def _offered(cc: ContactCentre, conv: Conversation) -> bool:
    item = cc.offer(conv)
    if item is None:
        return False
    conv.marks["offer"] = item
    return True


def _take_offer(conv: Conversation) -> dict[str, str]:
    item: dict[str, str] = conv.marks.pop("offer")
    conv.marks.setdefault("offers_seen", set()).add((item["sys_id"], item["offer_count"]))
    conv.marks.setdefault("sn_agents", []).append(item["assigned_to"])
    return item


def _assigned(cc: ContactCentre, conv: Conversation) -> bool:
    """An Assigned AgentWork the bridge has read (agents take longer than a poll)."""
    work = cc.assigned_work(conv)
    if work is None or not cc.bridge_saw(f"agent_work:{work['Id']}:Assigned"):
        return False
    conv.marks["agent_work"] = work
    return True


def _take_work(conv: Conversation) -> dict[str, Any]:
    work: dict[str, Any] = conv.marks.pop("agent_work")
    conv.marks.setdefault("agent_work_seen", set()).add(work["Id"])
    return work


def _state_is(*states: str) -> Check:
    return lambda cc, conv: cc.correlation_state(conv) in states


def _nothing(cc: ContactCentre, conv: Conversation) -> None:
    del cc, conv


_OFFER = "an AWA offer of the conversation (pending accept)"
_ASSIGNED = "an AgentWork Assigned in Salesforce"


def _on_offer(action: Callable[[ContactCentre, str], object]) -> Act:
    """Act on the offered AWA work item (by sys_id)."""

    def act(cc: ContactCentre, conv: Conversation) -> None:
        action(cc, _take_offer(conv)["sys_id"])

    return act


def _on_assigned(action: Callable[[ContactCentre, str], object]) -> Act:
    """Act on the Assigned AgentWork (by Id)."""

    def act(cc: ContactCentre, conv: Conversation) -> None:
        action(cc, _take_work(conv)["Id"])

    return act


def _on_opened(action: Callable[[ContactCentre, str], object]) -> Act:
    """Act on the conversation's Opened AgentWork (by Id)."""

    def act(cc: ContactCentre, conv: Conversation) -> None:
        action(cc, _opened(cc, conv)["Id"])

    return act


SN_ACCEPT = Step(_OFFER, _offered, _on_offer(lambda cc, item: cc.sn.control.accept(item)))
SN_REJECT = Step(_OFFER, _offered, _on_offer(lambda cc, item: cc.sn.control.reject(item)))
SN_TIME_OUT = Step(_OFFER, _offered, _on_offer(lambda cc, item: cc.sn.control.let_time_out(item)))
SF_ACCEPT = Step(_ASSIGNED, _assigned, _on_assigned(lambda cc, w: cc.sf.control.accept(w)))
SF_DECLINE = Step(
    _ASSIGNED, _assigned, _on_assigned(lambda cc, w: cc.sf.control.decline(w, "Busy"))
)
SF_PUSH_TIMEOUT = Step(
    _ASSIGNED, _assigned, _on_assigned(lambda cc, w: cc.sf.control.push_timeout(w))
)


def _opened(cc: ContactCentre, conv: Conversation) -> dict[str, Any]:
    work = cc.opened_work(conv)
    if work is None:
        raise Stuck(f"{conv.scenario.name}: no Opened AgentWork to act on")
    return work


def _transfer_to_agent(cc: ContactCentre, conv: Conversation) -> None:
    current = _opened(cc, conv)
    other = next(a for a in seed.AGENTS if a.sf_user_id != current["UserId"])
    cc.sf.control.transfer_to_agent(current["Id"], other.sf_user_id)
    conv.marks.setdefault("agent_work_seen", set())
    # the new agent takes it in Salesforce; the bridge hands the AWA work item over then
    conv.marks.setdefault("sn_agents", []).append(other.sn_user_sys_id)


def _sn_transfer_to_other_agent(cc: ContactCentre, conv: Conversation) -> None:
    """The AWA agent who accepted hands the work item to a colleague in ServiceNow."""
    items = [i for i in cc.work_items(conv) if i["state"] == "accepted" and i["active"] == "true"]
    holder = items[-1]
    other = next(a.sn_user_sys_id for a in seed.AGENTS if a.sn_user_sys_id != holder["assigned_to"])
    cc.sn.control.transfer(holder["sys_id"], "agent", other)


def _sn_item_accepted(cc: ContactCentre, conv: Conversation) -> bool:
    return any(i["state"] == "accepted" for i in cc.work_items(conv))


_ACTIVE = "the bridge to record the conversation as active"
SF_TRANSFER_TO_QUEUE = Step(
    _ACTIVE,
    _state_is("active"),
    _on_opened(lambda cc, w: cc.sf.control.transfer_to_queue(w, SF_TRANSFER_QUEUE)),
)
SF_TRANSFER_TO_AGENT = Step(_ACTIVE, _state_is("active"), _transfer_to_agent)
SF_CLOSE = Step(_ACTIVE, _state_is("active"), _on_opened(lambda cc, w: cc.sf.control.close(w)))


def _close_in_sn(cc: ContactCentre, conv: Conversation) -> None:
    cc.sn.control.close_interaction(_must(conv.interaction))


SN_CLOSE = Step(_ACTIVE, _state_is("active"), _close_in_sn)


def _must(value: str | None) -> str:
    if value is None:
        raise Stuck("the conversation has no ServiceNow interaction yet")
    return value


def _abandon(cc: ContactCentre, conv: Conversation) -> None:
    assert conv.sf_work_item_id is not None
    cc.sf.control.abandon(conv.sf_work_item_id)


def _final(*states: str) -> Step:
    return Step(
        f"the bridge to record the conversation as {' or '.join(states)}",
        _state_is(*states),
        _nothing,
    )


# -- the catalogue ---------------------------------------------------------------------------

ACTIVE = Step(_ACTIVE, _state_is("active"), _nothing)
_LIFECYCLE = (SN_ACCEPT, SF_ACCEPT, ACTIVE)
_WIP = "work_in_progress"


def _sf(name: str, steps: Sequence[Step], expected: Observed, calls: int) -> Scenario:
    return Scenario(name, customer_in_salesforce, tuple(steps), expected, calls)


def _sn(name: str, steps: Sequence[Step], expected: Observed, calls: int) -> Scenario:
    return Scenario(name, customer_in_servicenow, tuple(steps), expected, calls)


def _observed(
    state: str,
    outcomes: tuple[str | None, ...],
    agent_work: tuple[str, ...],
    work_items: tuple[str, ...],
    interaction: str,
    *,
    psr_open: bool = False,
) -> Observed:
    return Observed(state, outcomes, psr_open, agent_work, work_items, interaction)


SCENARIOS: tuple[Scenario, ...] = (
    _sf(
        "accept",
        _LIFECYCLE,
        _observed("active", ("accepted",), ("Opened",), ("accepted",), _WIP),
        3,  # interaction, offer, AgentWork
    ),
    _sf(
        "omni_decline",
        (SN_ACCEPT, SF_DECLINE, *_LIFECYCLE),
        _observed(
            "active",
            ("declined", "accepted"),
            ("Declined", "Opened"),
            ("accepted", "accepted"),
            _WIP,
        ),
        5,  # + blind transfer in AWA, AgentWork for the new agent
    ),
    _sf(
        "omni_push_timeout",
        (SN_ACCEPT, SF_PUSH_TIMEOUT, *_LIFECYCLE),
        _observed(
            "active",
            ("timed_out", "accepted"),
            ("DeclinedOnPushTimeout", "Opened"),
            ("accepted", "accepted"),
            _WIP,
        ),
        5,  # + blind transfer in AWA, AgentWork for the new agent
    ),
    _sf(
        "transfer_to_queue",
        (*_LIFECYCLE, SF_TRANSFER_TO_QUEUE, *_LIFECYCLE),
        _observed(
            "active",
            ("transferred", "accepted"),
            ("Transferred", "Opened"),
            ("accepted", "accepted"),
            _WIP,
        ),
        6,  # + AWA queue transfer, offer on the target queue, AgentWork for the new agent
    ),
    _sf(
        "transfer_to_agent",
        (*_LIFECYCLE, SF_TRANSFER_TO_AGENT, SF_ACCEPT, ACTIVE),
        _observed(
            "active",
            ("transferred", "accepted"),
            ("Opened", "Opened"),
            ("accepted", "accepted"),
            _WIP,
        ),
        4,  # + transfer in AWA (the org makes the second AgentWork)
    ),
    _sf(
        "cancel_before_reassign",
        (
            SN_ACCEPT,
            Step(_ASSIGNED, _assigned, _nothing),
            Step(
                "the ServiceNow work item accepted", _sn_item_accepted, _sn_transfer_to_other_agent
            ),
            SN_ACCEPT,
            SF_ACCEPT,
            ACTIVE,
        ),
        _observed(
            "active",
            ("transferred", "accepted"),
            ("Canceled", "Opened"),
            ("accepted", "accepted"),
            _WIP,
        ),
        5,  # + PATCH /agentWork Cancel, AgentWork for the new agent
    ),
    _sf(
        "customer_abandons",
        (
            Step(_OFFER, _offered, _abandon),
            _final("abandoned"),
        ),
        _observed("abandoned", ("abandoned",), (), ("canceled",), "closed_abandoned"),
        4,  # interaction, offer, close (cancels the offer), PSR delete
    ),
    _sf(
        "customer_abandons_after_awa_accept",
        (
            SN_ACCEPT,
            Step(_ASSIGNED, _assigned, _abandon),
            _final("abandoned"),
        ),
        _observed("abandoned", ("abandoned",), ("Canceled",), ("canceled",), "closed_abandoned"),
        5,  # interaction, offer, AgentWork, close, PSR delete
    ),
    _sf(
        "sn_reject",
        (SN_REJECT, *_LIFECYCLE),
        _observed("active", ("declined", "accepted"), ("Opened",), ("accepted",), _WIP),
        4,  # interaction, offer, second offer, AgentWork
    ),
    _sf(
        "sn_time_out",
        (SN_TIME_OUT, *_LIFECYCLE),
        _observed("active", ("timed_out", "accepted"), ("Opened",), ("accepted",), _WIP),
        4,  # interaction, offer, second offer, AgentWork
    ),
    _sf(
        "close_in_salesforce",
        (*_LIFECYCLE, SF_CLOSE, _final("closed")),
        _observed("closed", ("closed",), ("Closed",), ("canceled",), "closed_complete"),
        4,  # interaction, offer, AgentWork, interaction closed
    ),
    _sf(
        "close_in_servicenow",
        (*_LIFECYCLE, SN_CLOSE, _final("closed")),
        _observed("closed", ("closed",), ("Opened",), ("canceled",), "closed_complete"),
        3,  # interaction, offer, AgentWork (REST AgentWork cannot be closed)
    ),
    _sn(
        "sn_originated",
        (SF_ACCEPT, ACTIVE),
        _observed("active", ("accepted",), ("Opened",), ("accepted",), _WIP),
        2,  # POST /route, auto-assigned offer
    ),
    _sn(
        "sn_originated_close_in_salesforce",
        (SF_ACCEPT, SF_CLOSE, _final("closed")),
        _observed("closed", ("closed",), ("Closed",), ("canceled",), "closed_complete"),
        3,  # POST /route, offer, interaction closed
    ),
    _sn(
        "sn_originated_close_in_servicenow",
        (SF_ACCEPT, SN_CLOSE, _final("closed")),
        _observed("closed", ("closed",), ("Closed",), ("canceled",), "closed_complete"),
        3,  # POST /route, offer, PATCH /agentWork Close
    ),
)
SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}
