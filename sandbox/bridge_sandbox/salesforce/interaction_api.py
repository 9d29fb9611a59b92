"""The Interaction Service API of the sandbox org (the SCRT host, ``/api/v1/``).

Bring-Your-Own-Channel routing for a CCaaS partner: ``POST /route`` / ``DELETE /route``
create and delete the PendingServiceRouting of a conversation, ``POST /agentWork`` assigns
work to a user, ``PATCH /agentWork`` accepts, declines, closes or cancels it. Answers are
202 with the documented bodies; errors are ``{"code", "message"}`` with the documented
numeric codes. A repeated ``RequestId`` gets the first answer again and changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge_sandbox.salesforce.auth import OAuth
from bridge_sandbox.salesforce.ids import is_valid, to15, to18
from bridge_sandbox.salesforce.omni import AGENT_WORK, OPENED, OmniChannel
from bridge_sandbox.salesforce.store import Org, SalesforceApiError
from bridge_sandbox.serving import Fault

_log = logging.getLogger(__name__)

REPLAY_MEMORY = 10_000
ROUTING_TYPES = ("Initial", "Transfer", "Conference")
CANCEL_REASONS = ("Unknown", "Unavailable", "Decline", "Cancel")
CONTEXT_TYPES = ("Agent", "Chatbot")
AGENT_WORK_STATUSES = ("Accept", "Close", "Decline", "Cancel")
AGENT_ACTIONS = ("Transfer", "Conference")
AUTHORIZATION_CONTEXT_TYPES = (
    "ConversationChannelDefinition",
    "EmbeddedMessagingChannel",
    "ExternalConversationParticipant",
)
# ConversationChannelDefinition developer names look like {prefix}_{DefinitionName}.
_AUTHORIZATION_CONTEXT = re.compile(r"^[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+$")
_MESSAGING_SESSION_PREFIX = "0Mw"
_AGENT_WORK_PREFIX = "0Bz"
_MESSAGES = {
    500: "An internal server error occurred. Please contact Salesforce Support.",
    10004: "The supplied Authorization access token is not valid.",
    10016: "Enter a valid header.",
}


class ScrtHost(Protocol):
    """What the Interaction Service API needs from the sandbox around it."""

    @property
    def org(self) -> Org: ...

    @property
    def omni(self) -> OmniChannel: ...

    @property
    def oauth(self) -> OAuth: ...


class ApiError(Exception):
    """An answer in the ``{code, message}`` form."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def routes(sandbox: ScrtHost) -> list[BaseRoute]:
    return InteractionApi(sandbox).routes()


def render_error(status: int, fault: Fault) -> Response:
    """An injected fault answered in the Interaction Service API's ``{code, message}`` form."""
    code = int(fault.error_code) if fault.error_code and fault.error_code.isdigit() else status
    message = _MESSAGES.get(code, f"Request failed with HTTP status {status}.")
    return JSONResponse({"code": code, "message": message}, status_code=status)


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class InteractionApi:
    """The four routing endpoints, with header checks and RequestId replay."""

    def __init__(self, host: ScrtHost) -> None:
        self.host = host
        self._answers: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        host.org.on_reset(self._answers.clear)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/route", self._route_endpoint, methods=["POST", "DELETE"]),
            Route("/api/v1/agentWork", self._agent_work_endpoint, methods=["POST", "PATCH"]),
        ]

    async def _route_endpoint(self, request: Request) -> Response:
        handler = self.post_route if request.method == "POST" else self.delete_route
        return await self._serve(request, handler)

    async def _agent_work_endpoint(self, request: Request) -> Response:
        handler = self.post_agent_work if request.method == "POST" else self.patch_agent_work
        return await self._serve(request, handler)

    async def _serve(self, request: Request, handler: Handler) -> Response:
        body = await request.body()
        org = self.host.org
        try:
            request_id = self._check_headers(request)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        self.host.omni.apply_due()
        with org.lock:
            answer = self._answers.get(request_id)
            if answer is None:
                answer = self._answer(handler, body)
                if answer[0] < 500:
                    self._answers[request_id] = answer
                while len(self._answers) > REPLAY_MEMORY:
                    self._answers.popitem(last=False)
        return JSONResponse(answer[1], status_code=answer[0])

    def _answer(self, handler: Handler, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return 202, handler(_json_object(raw))
        except ApiError as exc:
            return exc.status, exc.body()
        except SalesforceApiError as exc:
            status = {"NOT_FOUND": 404, "INVALID_STATUS": 409}.get(exc.error_code, 400)
            return status, {"code": 10089, "message": exc.message}
        except Exception:  # noqa: BLE001 - the API boundary answers every defect
            # A defect of the sandbox: answered in the API's own form, the host keeps serving.
            _log.exception("Interaction Service API request failed")
            return 500, {"code": 500, "message": _MESSAGES[500]}

    def _check_headers(self, request: Request) -> str:
        headers = request.headers
        token = self.host.oauth.check_header(headers.get("authorization"))
        if token is None:
            raise ApiError(401, 10004, _MESSAGES[10004])
        org_id = headers.get("orgid", "")
        if not org_id:
            raise _bad_header("OrgId is missing")
        if len(org_id) != 15 or not is_valid(org_id):
            raise _bad_header(f"OrgId must be the 15-character org id, got {org_id!r}")
        if org_id != to15(self.host.org.org_id) or not token.value.startswith(org_id + "!"):
            raise ApiError(401, 10004, f"{_MESSAGES[10004]} It was not issued for org {org_id}.")
        context = headers.get("authorizationcontext", "")
        if not context:
            raise _bad_header("AuthorizationContext is missing")
        if not _AUTHORIZATION_CONTEXT.match(context):
            raise ApiError(
                403,
                10005,
                "The AuthorizationContext for the request isn't valid based on the supplied "
                f"Authorization access token: {context!r} is not a "
                "{prefix}_{ConversationChannelDefinitionName} developer name.",
            )
        context_type = headers.get("authorizationcontexttype")
        if request.method == "PATCH" and context_type is None:
            raise ApiError(400, 10093, "Invalid authorization context type: header missing.")
        if context_type is not None and context_type not in AUTHORIZATION_CONTEXT_TYPES:
            raise ApiError(400, 10093, f"Invalid authorization context type: {context_type!r}.")
        request_id = headers.get("requestid", "")
        if not _is_uuid(request_id):
            raise _bad_header(f"RequestId must be a UUID, got {request_id!r}")
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise _bad_header(f"Content-Type must be application/json, got {content_type!r}")
        return request_id

    # -- POST /route ----------------------------------------------------------------------
    def post_route(self, body: dict[str, Any]) -> dict[str, Any]:
        conversation = _conversation_identifier(body)
        routing_type = body.get("routingType")
        if routing_type not in ROUTING_TYPES:
            raise _invalid(f"routingType must be one of {', '.join(ROUTING_TYPES)}")
        if routing_type == "Conference":
            raise ApiError(
                400,
                10075,
                "Your Salesforce org isn't ready to use the Routing API with conferencing. "
                "Set the routingType to Initial or Transfer.",
            )
        queue_id = self._queue_of(body.get("routingInfo"))
        omni = self.host.omni
        session = self.host.omni.conversation(conversation)
        if routing_type == "Transfer" and session is None:
            raise _unknown_conversation(conversation)
        if session is not None:
            psr = omni.open_psr(session["Id"])
            if psr is not None:
                raise ApiError(
                    409,
                    10055,
                    f"Conversation precondition failed: conversation {conversation} already "
                    f"has an open PendingServiceRouting {psr['Id']}.",
                )
        if session is None:
            session, psr = omni.start(queue_id, conversation_identifier=conversation)
        elif routing_type == "Transfer":
            psr = omni.transfer(session["Id"], queue_id)
        else:
            psr = omni.route_work_item(session["Id"], queue_id, omni.channel("Messaging")["Id"])
        return {
            "success": True,
            "psrId": psr["Id"],
            "workItemId": session["Id"],
            "routingCorrelationId": str(uuid.uuid4()),
            "contextParamMap": {"queueId": queue_id, "routingType": routing_type},
        }

    def _queue_of(self, routing_info: Any) -> str:
        """The target queue of ``routingInfo`` (a queue id, or a flow's fallback queue)."""
        if routing_info is None:
            raise ApiError(400, 10030, "Specify either a flow or a queue to Route API.")
        if not isinstance(routing_info, dict):
            raise _invalid("routingInfo must be an object")
        attributes = routing_info.get("routingAttributes", {})
        if not isinstance(attributes, dict) or not all(
            isinstance(v, str) for v in attributes.values()
        ):
            raise _invalid("routingInfo.routingAttributes must map names to strings")
        queue_id, flow = routing_info.get("queueId"), routing_info.get("flow")
        if (queue_id is None) == (flow is None):
            raise ApiError(400, 10030, "Specify either a flow or a queue to Route API.")
        if flow is not None:
            if not isinstance(flow, dict) or not flow.get("flowId") or not flow.get("queueId"):
                raise ApiError(
                    400,
                    10024,
                    "For Flow based Routing, flow ID and Fallback Queue ID are required.",
                )
            queue_id = flow["queueId"]
        org = self.host.org
        group = (
            org.get("Group", queue_id)
            if isinstance(queue_id, str) and org.sobject_of(queue_id) == "Group"
            else None
        )
        if group is None or group["Type"] != "Queue":
            raise ApiError(400, 10032, f"Specified Queue ID is invalid: {queue_id!r}.")
        return str(group["Id"])

    # -- DELETE /route --------------------------------------------------------------------
    def delete_route(self, body: dict[str, Any]) -> dict[str, Any]:
        conversation = _conversation_identifier(body)
        reason = body.get("cancelReason")
        if reason is not None and reason not in CANCEL_REASONS:
            raise _invalid(f"cancelReason must be one of {', '.join(CANCEL_REASONS)}")
        session = self.host.omni.conversation(conversation)
        if session is None:
            raise _unknown_conversation(conversation)
        psr = self.host.omni.open_psr(session["Id"])
        if psr is not None:
            self.host.org.delete("PendingServiceRouting", psr["Id"], system=True)
        return {"success": psr is not None}

    # -- POST /agentWork ------------------------------------------------------------------
    def post_agent_work(self, body: dict[str, Any]) -> dict[str, Any]:
        org, omni = self.host.org, self.host.omni
        user_id = body.get("userId")
        if not isinstance(user_id, str) or org.sobject_of(user_id) != "User":
            raise ApiError(400, 15106, f"Invalid User Id parameter: {user_id!r}.")
        if org.get("User", user_id) is None:
            raise ApiError(400, 15106, f"Invalid User Id parameter: no user {user_id}.")
        work_item_id = body.get("workItemId")
        if (
            not isinstance(work_item_id, str)
            or len(work_item_id) != 15
            or not is_valid(work_item_id)
        ):
            raise ApiError(
                400,
                10012,
                f"Enter a valid workItemId for the MessagingSession ID: {work_item_id!r}.",
            )
        if not work_item_id.startswith(_MESSAGING_SESSION_PREFIX):
            raise ApiError(
                400, 15110, f"Enter a valid workItemId {work_item_id} for the MessagingSession ID."
            )
        session = org.get("MessagingSession", work_item_id)
        if session is None:
            raise ApiError(
                404, 15111, f"WorkItemId {work_item_id} for the MessagingSession ID not found."
            )
        capacity = _capacity(body)
        context = _routing_context(body.get("routingContext"))
        conversation = session["ConversationIdentifier"]
        if context and context["conversationIdentifier"] != conversation:
            raise ApiError(
                400,
                15107,
                f"Enter a conversationId that matches a conversation linked to workItemId "
                f"{work_item_id}. conversationId {context['conversationIdentifier']} doesn't "
                "match.",
            )
        _agent_action_visibilities(body.get("agentActionVisibilities"))
        if any(
            w["UserId"] == to18(user_id) and w["Status"] in ("Assigned", OPENED)
            for w in org.where(AGENT_WORK, WorkItemId=session["Id"])
        ):
            raise ApiError(
                409,
                15109,
                "An active AgentWork record already exists with the same UserId and WorkItemId.",
            )
        if omni.current_presence(user_id) is None:
            raise ApiError(
                400, 15112, "The agent's status is not associated with the channel for this work."
            )
        psr = omni.open_psr(session["Id"])
        work = org.insert(
            AGENT_WORK,
            {
                "UserId": user_id,
                "WorkItemId": session["Id"],
                "ServiceChannelId": omni.channel("Messaging")["Id"],
                "PendingServiceRoutingId": psr["Id"] if psr else None,
                "ShouldSkipCapacityCheck": True,
                **capacity,
            },
            system=True,
        )
        details: dict[str, Any] = {
            "existPsr": psr is not None,
            "capacityWeight": work["CapacityWeight"],
            "capacityPercentage": work["CapacityPercentage"],
            "routingContext": context
            or {
                "conversationIdentifier": conversation,
                "routingType": "Transfer" if psr and psr["IsTransfer"] else "Initial",
                "routingCorrelationId": str(uuid.uuid4()),
            },
        }
        if psr is not None:
            details["psrId"] = psr["Id"]
        return {
            "id": str(uuid.uuid4()),
            "agentWorkId": work["Id"],
            "agentWorkDetails": {k: v for k, v in details.items() if v is not None},
            "success": True,
        }

    # -- PATCH /agentWork -----------------------------------------------------------------
    def patch_agent_work(self, body: dict[str, Any]) -> dict[str, Any]:
        context_type = body.get("contextType")
        if context_type not in CONTEXT_TYPES:
            raise ApiError(
                400, 10083, f"Invalid context type: {context_type!r} is not supported or invalid."
            )
        if context_type == "Chatbot":
            raise ApiError(400, 10084, f"Invalid botId: {body.get('botId')!r}.")
        status = body.get("status")
        if status not in AGENT_WORK_STATUSES:
            raise ApiError(400, 10085, f"Invalid status: {status!r}.")
        work_id = body.get("workId")
        org, omni = self.host.org, self.host.omni
        work = (
            org.get(AGENT_WORK, work_id)
            if isinstance(work_id, str) and work_id.startswith(_AGENT_WORK_PREFIX)
            else None
        )
        if work is None:
            raise ApiError(400, 10082, f"Invalid workId: no AgentWork {work_id!r}.")
        action = {
            "Accept": omni.accept,
            "Decline": omni.decline,
            "Close": omni.close,
            "Cancel": omni.cancel,
        }[status]
        try:
            action(work["Id"])
        except SalesforceApiError as exc:
            if exc.error_code != "INVALID_STATUS":
                raise
            raise ApiError(409, 10085, f"Invalid status: {exc.message}.") from exc
        return {"success": True}


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ApiError(400, 10100, "A request body is required and can't be empty.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, 10100, f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, 10100, "The request body must be a JSON object.")
    return body


def _conversation_identifier(body: dict[str, Any]) -> str:
    value = body.get("conversationIdentifier")
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, 10018, "The conversation identifier is not valid (missing or empty).")
    return value


def _capacity(body: dict[str, Any]) -> dict[str, float]:
    weight, percentage = body.get("capacityWeight"), body.get("capacityPercentage")
    if weight is not None and percentage is not None:
        raise ApiError(
            400, 10013, "Enter either a capacityPercentage or a capacityWeight, but not both."
        )
    if weight is not None:
        if not _is_number(weight) or weight < 0:
            raise ApiError(400, 10014, "Enter a capacity weight greater than or equal to 0.")
        return {"CapacityWeight": float(weight)}
    if percentage is not None:
        if not _is_number(percentage) or not 0 <= percentage <= 100:
            raise ApiError(400, 10015, "Enter a capacity percentage between 0 and 100, inclusive.")
        return {"CapacityPercentage": float(percentage)}
    return {}


def _routing_context(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    required = ("conversationIdentifier", "routingType", "routingCorrelationId")
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in required):
        raise _invalid(f"routingContext needs string fields {', '.join(required)}")
    if value["routingType"] not in ROUTING_TYPES:
        raise _invalid(f"routingContext.routingType must be one of {', '.join(ROUTING_TYPES)}")
    return {k: value[k] for k in required}


def _agent_action_visibilities(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(
        isinstance(v, dict)
        and v.get("agentAction") in AGENT_ACTIONS
        and isinstance(v.get("visible"), bool)
        for v in value
    ):
        raise _invalid(
            "agentActionVisibilities must be a list of {agentAction: Transfer|Conference, "
            "visible: boolean}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _bad_header(detail: str) -> ApiError:
    return ApiError(400, 10016, f"Enter a valid header. {detail}.")


def _invalid(detail: str) -> ApiError:
    return ApiError(400, 10089, f"Invalid parameters passed to API: {detail}.")


def _unknown_conversation(conversation: str) -> ApiError:
    return ApiError(400, 10018, f"The conversation identifier is not valid: {conversation!r}.")
