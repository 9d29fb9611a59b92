"""The ServiceNow events receiver over TLS with a plain requests client: the instance's
credentials (Basic, mutual TLS), size, media type, schema, rate; one inbox row per
``(sys_id, sys_mod_count)``; an older version recorded stale; 202 only once the inbox
transaction committed (a ledger failure is a 5xx and nothing is recorded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from pydantic import SecretStr

from bridge.adapters.servicenow.polling import INTERACTION_FIELDS, WORK_ITEM_FIELDS
from bridge.adapters.servicenow.receiver import Receiver
from bridge.app.settings import ReceiverSettings
from bridge.ledger import InboxEvent, SqlLedger
from bridge.ledger.ports import Ledger, LedgerTx

ITEM = "a" * 32
QUEUE = "c" * 32
USER, PASSWORD = "awa.provider", "s3cret-provider"
WHEN = "2026-12-03 14:05:09"


def delivery(mod: int = 3, *, sys_id: str = ITEM, **values: str) -> dict[str, Any]:
    record = dict.fromkeys(WORK_ITEM_FIELDS, "")
    record |= {"sys_id": sys_id, "sys_mod_count": str(mod), "sys_updated_on": WHEN}
    record |= {"queue": QUEUE, "state": "pending", "number": "AWI0001001"} | values
    return {
        "event": "awa_work_item.created",
        "table": "awa_work_item",
        "sys_id": sys_id,
        "sys_mod_count": mod,
        "sys_updated_on": WHEN,
        "record": record,
        "instance": "sandbox",
        "sent_at": f"{WHEN}.100",
    }


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("receiver-tls")
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return files


class FailingCommit:
    """A ledger whose write transactions fail at the end, after the inbox was written:
    what a commit that fails (disk full, connection lost) does."""

    def __init__(self, inner: SqlLedger) -> None:
        self._inner = inner

    @contextmanager
    def transaction(self) -> Iterator[LedgerTx]:
        with self._inner.transaction() as tx:
            yield tx
            raise RuntimeError("commit failed")

    def reading(self) -> Any:
        return self._inner.reading()

    def close(self) -> None:
        self._inner.close()


@contextmanager
def running(
    ledger: Ledger, tls_files: dict[str, Path], **settings: Any
) -> Iterator[tuple[Receiver, requests.Session]]:
    values: dict[str, Any] = {
        "port": 0,
        "cert_file": tls_files["cert"],
        "key_file": tls_files["key"],
        "username": USER,
        "password": SecretStr(PASSWORD),
        "max_body_bytes": 4096,
    } | settings
    receiver = Receiver(ReceiverSettings(**values), ledger, mapped=frozenset({QUEUE}))
    receiver.start()
    session = requests.Session()
    session.trust_env = False  # the machine's REQUESTS_CA_BUNDLE is not this CA
    session.verify = str(tls_files["ca"])
    session.auth = (USER, PASSWORD)
    try:
        yield receiver, session
    finally:
        session.close()
        receiver.stop()


@pytest.fixture
def receiver(
    sqlite_ledger: SqlLedger, tls_files: dict[str, Path]
) -> Iterator[tuple[Receiver, requests.Session]]:
    with running(sqlite_ledger, tls_files) as pair:
        yield pair


def inbox(ledger: SqlLedger) -> list[InboxEvent]:
    with ledger.reading() as tx:
        return sorted(tx.audit.inbox_events(limit=1000), key=lambda e: e.id or 0)


def post(receiver: Receiver, session: requests.Session, data: Any, **kw: Any) -> requests.Response:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"} | kw.pop("headers", {})
    return session.post(receiver.url, data=raw, headers=headers, timeout=10, **kw)


def test_a_delivery_is_recorded_once_as_the_polls_event(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    first = post(rc, session, delivery(3))
    again = post(rc, session, delivery(3))
    assert (first.status_code, first.json()) == (202, {"result": "recorded"})
    assert (again.status_code, again.json()) == (202, {"result": "duplicate"})
    [event] = inbox(sqlite_ledger)
    assert event.source == "servicenow"
    assert event.stream == "servicenow:awa_work_item"
    assert event.source_event_id == f"awa_work_item:{ITEM}:3"
    assert event.kind == "awa_work_item"
    assert event.status == "pending"
    assert event.payload["queue"] == QUEUE
    assert set(event.payload) == {"sys_id", "sys_updated_on", "sys_mod_count", *WORK_ITEM_FIELDS}
    assert (event.record_key, event.record_version) == (f"awa_work_item:{ITEM}", 3)


def test_an_older_version_is_recorded_stale_and_not_acted_on(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    assert post(rc, session, delivery(5, state="accepted")).json() == {"result": "recorded"}
    late = post(rc, session, delivery(4, state="offered"))
    assert (late.status_code, late.json()) == (202, {"result": "stale"})
    newer, stale = inbox(sqlite_ledger)
    assert (newer.source_event_id, newer.status) == (f"awa_work_item:{ITEM}:5", "pending")
    assert (stale.source_event_id, stale.status) == (f"awa_work_item:{ITEM}:4", "skipped")
    assert "version 4 arrived after version 5" in (stale.error or "")
    with sqlite_ledger.reading() as tx:
        assert [e.source_event_id for e in tx.inbox.pending(10)] == [newer.source_event_id]


@pytest.mark.parametrize(
    "auth",
    [None, (USER, "wrong"), ("someone", PASSWORD), (USER, PASSWORD + "x")],
    ids=["none", "wrong-password", "wrong-user", "longer-password"],
)
def test_wrong_credentials_are_401_and_nothing_is_recorded(
    receiver: tuple[Receiver, requests.Session],
    sqlite_ledger: SqlLedger,
    auth: tuple[str, str] | None,
) -> None:
    rc, session = receiver
    session.auth = auth
    answer = post(rc, session, delivery(3))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    # not even a refusal: nobody authenticated sent it
    assert post(rc, session, b"junk", headers={"Content-Type": "text/plain"}).status_code == 401
    assert inbox(sqlite_ledger) == []


def test_a_bearer_or_garbled_authorization_is_401(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    session.auth = None
    for header in ("Bearer abc", "Basic !!!notbase64", "Basic " + "dXNlcg=="):  # no colon
        assert post(rc, session, delivery(), headers={"Authorization": header}).status_code == 401
    assert inbox(sqlite_ledger) == []


def refusals(ledger: SqlLedger) -> list[InboxEvent]:
    return [e for e in inbox(ledger) if e.status == "error"]


def test_a_body_too_big_is_413_and_recorded(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    big = delivery(3, number="x" * 5000)
    answer = post(rc, session, big)
    assert answer.status_code == 413
    assert "larger than 4096 bytes" in answer.json()["error"]
    # sent in chunks without a length: the limit holds while reading
    chunks = iter([json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)])
    chunked = session.post(
        rc.url, data=chunks, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert chunked.status_code == 413
    [refused, *_] = refusals(sqlite_ledger)
    assert refused.stream == "servicenow:receiver"
    assert "larger than 4096 bytes" in (refused.error or "")
    assert [e for e in inbox(sqlite_ledger) if e.status == "pending"] == []


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_that_is_not_json_is_415_and_recorded(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger, media: str
) -> None:
    rc, session = receiver
    answer = post(rc, session, delivery(3), headers={"Content-Type": media})
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]
    [refused] = refusals(sqlite_ledger)
    assert "Content-Type must be application/json" in (refused.error or "")


@pytest.mark.parametrize(
    ("data", "reason", "kind"),
    [
        (b"{not json", "the body is not JSON", "delivery"),
        ({**delivery(3), "sys_mod_count": "three"}, "sys_mod_count", "awa_work_item"),
        ({**delivery(3), "table": "incident"}, "table 'incident' is not one", "delivery"),
        (
            {**delivery(3), "record": {"sys_id": ITEM}},
            f"record of awa_work_item {ITEM} lacks",
            "awa_work_item",
        ),
    ],
    ids=["malformed", "schema", "unknown-table", "record-incomplete"],
)
def test_a_schema_invalid_delivery_is_400_with_the_reason_recorded(
    receiver: tuple[Receiver, requests.Session],
    sqlite_ledger: SqlLedger,
    data: Any,
    reason: str,
    kind: str,
) -> None:
    rc, session = receiver
    answer = post(rc, session, data)
    assert answer.status_code == 400
    assert reason in answer.json()["error"]
    # the same body again is the same refusal, not a second row
    assert post(rc, session, data).status_code == 400
    [refused] = refusals(sqlite_ledger)
    assert refused.kind == kind
    assert reason in (refused.error or "")
    assert json.loads(refused.error or "{}")["code"] == "refused_delivery"
    # and the traffic goes on
    assert post(rc, session, delivery(7)).json() == {"result": "recorded"}


def test_an_interaction_no_poll_would_read_is_recorded_skipped(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    sys_id = "b" * 32
    record = dict.fromkeys(INTERACTION_FIELDS, "")
    record |= {"sys_id": sys_id, "sys_mod_count": "2", "sys_updated_on": WHEN, "queue": "e" * 32}
    data = {
        "event": "interaction.updated",
        "table": "interaction",
        "sys_id": sys_id,
        "sys_mod_count": 2,
        "sys_updated_on": WHEN,
        "record": record,
        "instance": "sandbox",
        "sent_at": WHEN,
    }
    assert post(rc, session, data).json() == {"result": "skipped"}
    [event] = inbox(sqlite_ledger)
    assert (event.status, event.kind) == ("skipped", "interaction")
    assert "which the crosswalk does not map" in (event.error or "")


def test_a_ledger_failure_is_a_5xx_and_nothing_is_recorded(
    sqlite_ledger: SqlLedger, tls_files: dict[str, Path]
) -> None:
    with running(FailingCommit(sqlite_ledger), tls_files) as (rc, session):
        answer = post(rc, session, delivery(3))
        assert answer.status_code == 503
        assert "not recorded" in answer.json()["error"]
    assert inbox(sqlite_ledger) == []
    # the same delivery once the ledger is back is recorded (it was never acknowledged)
    with running(sqlite_ledger, tls_files) as (rc, session):
        assert post(rc, session, delivery(3)).json() == {"result": "recorded"}


def test_a_202_comes_after_the_commit(
    receiver: tuple[Receiver, requests.Session], sqlite_ledger: SqlLedger
) -> None:
    rc, session = receiver
    for mod in range(20):
        assert post(rc, session, delivery(mod)).status_code == 202
        # read at once on another connection: what was acknowledged is there
        assert inbox(sqlite_ledger)[-1].source_event_id == f"awa_work_item:{ITEM}:{mod}"


def test_a_source_over_its_rate_gets_429_with_retry_after(
    sqlite_ledger: SqlLedger, tls_files: dict[str, Path]
) -> None:
    with running(sqlite_ledger, tls_files, rate_limit=2.0) as (rc, session):
        answers = [post(rc, session, delivery(mod)) for mod in range(4)]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [202, 202]
    assert 429 in codes[2:]
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(inbox(sqlite_ledger)) == codes.count(202)


def test_plain_http_only_when_allowed(sqlite_ledger: SqlLedger, tls_files: dict[str, Path]) -> None:
    with running(sqlite_ledger, tls_files, allow_plain_http=True) as (rc, session):
        assert rc.url.startswith("http://")
        assert post(rc, session, delivery(3)).json() == {"result": "recorded"}
    with running(sqlite_ledger, tls_files) as (rc, session):
        assert rc.url.startswith("https://")
        with pytest.raises(requests.ConnectionError):
            session.post(rc.url.replace("https://", "http://"), json=delivery(4), timeout=5)


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA(organization_name="ServiceNow instance client CA")


def client_cert(ca: trustme.CA, directory: Path, name: str) -> str:
    cert = ca.issue_cert("dev12345.service-now.com")
    path = directory / f"{name}.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def test_mutual_tls_accepts_the_instance_and_refuses_others(
    sqlite_ledger: SqlLedger, tls_files: dict[str, Path], client_ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(ca_file))
    instance = client_cert(client_ca, tmp_path, "instance")
    stranger = client_cert(trustme.CA(), tmp_path, "stranger")
    tls_only = {"client_ca_file": ca_file, "username": None, "password": None}
    with running(sqlite_ledger, tls_files, **tls_only) as (rc, session):
        session.auth = None
        assert post(rc, session, delivery(3), cert=instance).json() == {"result": "recorded"}
        for cert in (None, stranger):
            # refused in the handshake (TLS 1.3: at the first read), never reaching the app
            with pytest.raises(requests.ConnectionError):
                post(rc, session, delivery(4), cert=cert)
    # both configured: both are required
    with running(sqlite_ledger, tls_files, client_ca_file=ca_file) as (rc, session):
        assert post(rc, session, delivery(5), cert=instance).json() == {"result": "recorded"}
        session.auth = None
        assert post(rc, session, delivery(6), cert=instance).status_code == 401
    assert [e.source_event_id[-2:] for e in inbox(sqlite_ledger)] == [":3", ":5"]


def test_the_inbox_tells_stale_from_new_on_every_database(ledger: SqlLedger) -> None:
    """The SQL inbox itself (SQLite and PostgreSQL): versions per record, a batch at once."""
    from bridge.adapters.servicenow.payload import check  # noqa: PLC0415

    def events(*mods: int, sys_id: str = ITEM) -> list[Any]:
        mapped = frozenset({QUEUE})
        return [check(json.dumps(delivery(m, sys_id=sys_id)).encode(), mapped).event for m in mods]

    other = "f" * 32
    with ledger.transaction() as tx:
        first = tx.inbox.record(
            "servicenow:awa_work_item", events(5) + events(1, sys_id=other), None
        )
    with ledger.transaction() as tx:
        second = tx.inbox.record(
            "servicenow:awa_work_item", events(4, 5, 6) + events(2, sys_id=other), None
        )
    assert (len(first.inserted), first.stale, first.duplicates) == (2, [], [])
    assert second.stale == [f"awa_work_item:{ITEM}:4"]
    assert second.duplicates == [f"awa_work_item:{ITEM}:5"]
    assert len(second.inserted) == 2  # version 6 of ITEM, version 2 of the other
    with ledger.reading() as tx:
        pending = sorted(e.source_event_id for e in tx.inbox.pending(10))
    assert pending == sorted(
        [
            f"awa_work_item:{ITEM}:5",
            f"awa_work_item:{ITEM}:6",
            f"awa_work_item:{other}:1",
            f"awa_work_item:{other}:2",
        ]
    )


def test_concurrent_deliveries_share_commits_and_keep_one_row_per_change(
    sqlite_ledger: SqlLedger, tls_files: dict[str, Path]
) -> None:
    """Deliveries arriving together are written in one transaction: a repeat inside one
    batch is still a duplicate, every distinct change one row, each answered after it."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with running(sqlite_ledger, tls_files) as (rc, _):

        def send(mod: int) -> str:
            session = requests.Session()
            session.trust_env = False
            session.verify = str(tls_files["ca"])
            session.auth = (USER, PASSWORD)
            with session:
                answer = post(rc, session, delivery(mod, sys_id=f"{mod % 4:032x}"))
            assert answer.status_code == 202, answer.text
            return str(answer.json()["result"])

        mods = [m for m in range(40) for _ in range(3)]  # each change sent three times
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, mods))
    rows = inbox(sqlite_ledger)
    assert len(rows) == 40
    assert len({r.source_event_id for r in rows}) == 40
    assert results.count("recorded") + results.count("stale") == 40
    assert results.count("duplicate") == 80
