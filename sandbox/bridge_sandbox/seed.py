"""The seed both emulators start with, and that the sandbox's mapping tables refer to.

One contact centre: four agents who work in both systems, two Salesforce external-routing
queues routed to AWA queues, and one AWA queue whose work is routed into Salesforce.
Ids are deterministic so that the sandbox crosswalk (``bridge_sandbox/mappings/``) can name
them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bridge_sandbox.salesforce.ids import make_id

_NS = uuid.UUID("6f1c9a52-3d0e-4b6b-9a57-0d7a3c1e2b90")


def sys_id(name: str) -> str:
    """A deterministic 32-hex ServiceNow sys_id for a seed record."""
    return uuid.uuid5(_NS, name).hex


SF_ORG_ID = make_id("00D", 1)


@dataclass(frozen=True)
class Agent:
    """A person with a Salesforce user and a ServiceNow user."""

    name: str
    sf_user_id: str
    sf_username: str
    sn_user_name: str
    sn_user_sys_id: str


AGENTS: tuple[Agent, ...] = tuple(
    Agent(
        name=full,
        sf_user_id=make_id("005", n),
        sf_username=f"{login}@example.com.sandbox",
        sn_user_name=login,
        sn_user_sys_id=sys_id(f"sys_user:{login}"),
    )
    for n, (full, login) in enumerate(
        [
            ("Alice Ahmed", "alice.ahmed"),
            ("Bob Brown", "bob.brown"),
            ("Carol Chen", "carol.chen"),
            ("Dan Diaz", "dan.diaz"),
        ],
        start=1,
    )
)

# The Salesforce user the bridge authenticates as (client credentials run-as user).
SF_INTEGRATION_USER_ID = make_id("005", 99)
SF_INTEGRATION_USERNAME = "bridge.integration@example.com.sandbox"

# ServiceNow integration user (roles: awa_integration_user, rest_api_explorer).
SN_INTEGRATION_USER = "bridge.integration"
SN_INTEGRATION_USER_SYS_ID = sys_id("sys_user:bridge.integration")


@dataclass(frozen=True)
class Channel:
    name: str
    developer_name: str
    sf_service_channel_id: str
    sf_related_entity: str  # the work item sobject of this channel
    sn_service_channel_sys_id: str
    sn_document_table: str


CHANNELS: tuple[Channel, ...] = (
    Channel(
        name="Messaging",
        developer_name="sfdc_livemessage",
        sf_service_channel_id=make_id("0N9", 1),
        sf_related_entity="MessagingSession",
        sn_service_channel_sys_id=sys_id("awa_service_channel:chat"),
        sn_document_table="interaction",
    ),
    Channel(
        name="Case",
        developer_name="sfdc_case",
        sf_service_channel_id=make_id("0N9", 2),
        sf_related_entity="Case",
        sn_service_channel_sys_id=sys_id("awa_service_channel:case"),
        sn_document_table="interaction",
    ),
)


@dataclass(frozen=True)
class QueuePair:
    """A Salesforce queue (Group of type Queue) and the AWA queue it corresponds to.

    ``direction`` says where work starts: ``sf_to_sn`` for a Salesforce external-routing
    queue whose PSRs the bridge offers in AWA; ``sn_to_sf`` for an AWA queue whose work items
    the bridge routes into Salesforce (an Omni-Channel-routed queue there).
    """

    name: str
    direction: str
    sf_queue_id: str
    sf_developer_name: str
    sn_queue_sys_id: str
    sn_external_id: str


QUEUES: tuple[QueuePair, ...] = (
    QueuePair(
        name="Support",
        direction="sf_to_sn",
        sf_queue_id=make_id("00G", 1),
        sf_developer_name="Support_External",
        sn_queue_sys_id=sys_id("awa_queue:support"),
        sn_external_id="SUPPORT_EXT",
    ),
    QueuePair(
        name="Billing",
        direction="sf_to_sn",
        sf_queue_id=make_id("00G", 2),
        sf_developer_name="Billing_External",
        sn_queue_sys_id=sys_id("awa_queue:billing"),
        sn_external_id="BILLING_EXT",
    ),
    QueuePair(
        name="Salesforce Overflow",
        direction="sn_to_sf",
        sf_queue_id=make_id("00G", 3),
        sf_developer_name="SN_Overflow",
        sn_queue_sys_id=sys_id("awa_queue:sf_overflow"),
        sn_external_id="SF_OVERFLOW",
    ),
)

# ServicePresenceStatus ids (Salesforce) and awa_presence_state sys_ids (ServiceNow).
SF_PRESENCE_AVAILABLE = make_id("0N5", 1)
SF_PRESENCE_BUSY = make_id("0N5", 2)
SN_PRESENCE_AVAILABLE = sys_id("awa_presence_state:available")
SN_PRESENCE_AWAY = sys_id("awa_presence_state:away")
SN_PRESENCE_OFFLINE = sys_id("awa_presence_state:offline")

DEFAULT_PUSH_TIMEOUT_SECONDS = 30
DEFAULT_AGENT_CAPACITY = 5
