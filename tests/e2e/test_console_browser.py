"""The console in a real headless browser (Debian's chromium + chromium-driver, driven by
Selenium) over the ledger the sandbox demo wrote: list, filter, open a conversation and
see both lanes and every segment outcome; search by any id; the not-found page; without
the credential, 401. What the pages show is checked against the ledger itself.

The conversation page is saved as a screenshot (``console-conversation.png`` in the test's
temporary directory; ``BRIDGE_CONSOLE_SCREENSHOT=path`` copies it there too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from pydantic import SecretStr

from bridge.app.health import Check, HealthServer
from bridge.console import Credentials, console_app, standalone_app
from bridge.console.server import Server
from bridge.ledger import SqlLedger, audit
from bridge.ledger.words import crosswalk_names
from bridge_sandbox import tables
from bridge_sandbox.demo import free_port, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "console-test-token"
USER, PASSWORD = "operator", "s3cret-for-tests"


def _browser_missing() -> str | None:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return "no browser: install the Debian package chromium (apt-get install chromium)"
    if not CHROMEDRIVER.exists() and shutil.which("chromedriver") is None:
        return "no driver: install the Debian package chromium-driver"
    return None


@dataclass
class Demo:
    ledger: SqlLedger
    base: str  # http://127.0.0.1:port/console


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The sandbox demo's ledger (every kind of scenario) behind a console."""
    report = run_demo(12, seed=7, directory=tmp_path_factory.mktemp("demo"))
    assert report.ok, report.as_dict()
    ledger = SqlLedger(report.ledger_url)
    credentials = Credentials(token=SecretStr(TOKEN), username=USER, password=SecretStr(PASSWORD))
    app = console_app(ledger, credentials, names=crosswalk_names(tables.DIRECTORY), page_size=5)
    server = Server(standalone_app(app), host="127.0.0.1", port=0)
    server.start()
    try:
        yield Demo(ledger, f"http://127.0.0.1:{server.port}/console")
    finally:
        server.stop()
        ledger.close()


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[object]:
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver  # noqa: PLC0415 - only with a browser present
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1366,1800", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(
        options=options,
        service=Service(
            str(CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver"))
        ),
    )
    # the operator's credential on every request the browser makes
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    )
    try:
        yield driver
    finally:
        driver.quit()


def _truth(ledger: SqlLedger, **filters: object) -> list[str]:
    with ledger.reading() as tx:
        flt = audit.CorrelationFilter(**filters)  # type: ignore[arg-type]
        return [c.id for c in tx.audit.list_correlations(flt, 1000)]


def _listed(driver) -> list[str]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "table.grid tbody td a code")]


def _all_pages(driver) -> list[str]:
    """Every conversation listed, following the "Older" links."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    seen = _listed(driver)
    while links := driver.find_elements(By.CSS_SELECTOR, "a[rel=next]"):
        links[0].click()
        seen += _listed(driver)
    return seen


def test_list_is_paged_newest_first(demo: Demo, browser) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.get(demo.base + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Conversations"
    assert len(_listed(browser)) == 5  # the page size
    assert _all_pages(browser) == _truth(demo.ledger)  # every one, newest first
    assert len(_truth(demo.ledger)) == 12


def test_filters_by_state_direction_and_agent_name(demo: Demo, browser) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    browser.get(demo.base + "/")
    Select(browser.find_element(By.ID, "f-direction")).select_by_value("sn_to_sf")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    expected = _truth(demo.ledger, direction="sn_to_sf")
    assert expected
    assert _all_pages(browser) == expected

    browser.get(demo.base + "/")
    Select(browser.find_element(By.ID, "f-state")).select_by_value("abandoned")
    browser.find_element(By.ID, "f-agent").send_keys("bob.brown")  # a crosswalk name
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    names = crosswalk_names(tables.DIRECTORY)
    expected = _truth(demo.ledger, state="abandoned", agent=names.ids_of("bob.brown"))
    assert _all_pages(browser) == expected
    # the form keeps what was asked, so the next filter starts from it
    assert Select(browser.find_element(By.ID, "f-state")).first_selected_option.text == "abandoned"


def test_every_conversation_shows_both_lanes_and_every_segment_outcome(
    demo: Demo,
    browser,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    with demo.ledger.reading() as tx:
        details = [tx.audit.correlation_detail(cid) for cid in _truth(demo.ledger)]
    outcomes_seen: set[str] = set()
    richest = max(details, key=lambda d: len(d.segments))
    for detail in details:
        corr = detail.correlation
        browser.get(demo.base + "/")
        _open_from_list(browser, corr.id)
        assert corr.id in browser.find_element(By.TAG_NAME, "h1").text
        lanes = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.timeline th")]
        assert lanes == ["Time (UTC)", "Salesforce", "ServiceNow"]
        for lane in ("salesforce", "servicenow"):  # something happened on both sides
            cells = browser.find_elements(By.CSS_SELECTOR, f"td.lane-{lane}:not(.empty-lane)")
            assert cells, f"{corr.id}: nothing in the {lane} lane"
        # the correlation ids on both sides
        page = browser.find_element(By.TAG_NAME, "main").text
        for value in (corr.sf_work_item_id, corr.sn_document_sys_id):
            assert value
            assert value in page
        # every segment with its outcome, in the segments table and on the timeline
        shown = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "tr.segment td.outcome")]
        assert shown == [s.outcome or "open" for s in detail.segments]
        lines = [
            td.text for td in browser.find_elements(By.CSS_SELECTOR, "tr.t-segment td.lane .words")
        ]
        for seg in detail.segments:
            if seg.outcome:
                word = seg.outcome.replace("_", " ")
                assert any(
                    line.startswith(f"{seg.kind} #{seg.seq} ") and line.endswith(word)
                    for line in lines
                ), (seg.seq, seg.outcome, lines)
                outcomes_seen.add(seg.outcome)
        # the two-agent guard's cancels, marked (read from the ledger's commands here; whether
        # the demo needs one depends on timing: tests/ledger/test_timeline_words.py has both)
        offers = {
            c.caused_by_event_id for c in detail.commands if c.operation in ("offer", "transfer")
        }
        guard = {
            c.id
            for c in detail.commands
            if (c.operation == "update_agent_work" and c.payload.get("status") == "Cancel")
            or (c.operation == "cancel_work_item" and c.caused_by_event_id in offers)
        }
        marked = browser.find_elements(By.CSS_SELECTOR, "tr.m-guard code.ref")
        assert {m.text for m in marked} == guard
        times = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.timeline td.when")]
        assert times == sorted(times)  # millisecond times, in order
        if detail is richest:
            shot = tmp_path / "console-conversation.png"
            browser.save_screenshot(str(shot))
    with demo.ledger.reading() as tx:
        in_ledger = set(tx.audit.stats()["segments"]["by_outcome"]) - {"open"}
    assert outcomes_seen == in_ledger
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("BRIDGE_CONSOLE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def _open_from_list(browser, correlation_id: str) -> None:
    """Find the conversation in the list (paging on) and follow its link."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    while True:
        links = browser.find_elements(By.CSS_SELECTOR, f'a[href$="/c/{correlation_id}"]')
        if links:
            links[0].click()
            return
        older = browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
        assert older, f"{correlation_id} not in the list"
        older[0].click()


def test_search_by_any_id_and_the_not_found_page(demo: Demo, browser) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    with demo.ledger.reading() as tx:
        corr = tx.audit.list_correlations(audit.CorrelationFilter(direction="sf_to_sn"), 1)[0]
        segment = tx.audit.correlation_detail(corr.id).segments[-1]
    for any_id in (corr.sf_psr_id, segment.external_segment_id, corr.sn_document_sys_id):
        browser.get(demo.base + "/streams")
        box = browser.find_element(By.ID, "search-id")
        box.send_keys(str(any_id), Keys.ENTER)  # the keyboard alone
        assert corr.id in _heading_after_navigation(browser, "/c/")

    browser.get(demo.base + "/")
    browser.find_element(By.ID, "search-id").send_keys("no-such-id", Keys.ENTER)
    assert _heading_after_navigation(browser, "/search") == "Not found"
    assert "no-such-id" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.get(demo.base + "/c/0JR000000000000AAA")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"


def _heading_after_navigation(browser, path_part: str) -> str:
    """The page's h1 once the browser has gone to a URL containing ``path_part`` (a form
    submitted with Enter navigates after send_keys returns)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    WebDriverWait(browser, 10).until(
        lambda d: path_part in d.current_url and d.find_elements(By.TAG_NAME, "h1")
    )
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def test_other_pages_render(demo: Demo, browser) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    with demo.ledger.reading() as tx:
        streams = [s.stream for s in tx.audit.streams()]
        runs = tx.audit.reconcile_runs(5)
    browser.get(demo.base + "/streams")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert streams
    assert all(s in page for s in streams)
    browser.get(demo.base + "/reconciliations")
    browser.find_element(By.CSS_SELECTOR, f'a[href$="/reconciliations/{runs[0][0].id}"]').click()
    assert runs[0][0].id in browser.find_element(By.TAG_NAME, "h1").text
    browser.get(demo.base + "/problems")
    assert "Dead letters" in browser.find_element(By.TAG_NAME, "main").text
    # every form control has its label
    for page_path in ("/", "/problems"):
        browser.get(demo.base + page_path)
        for control in browser.find_elements(By.CSS_SELECTOR, "input, select"):
            control_id = control.get_attribute("id")
            assert browser.find_elements(By.CSS_SELECTOR, f'label[for="{control_id}"]')


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy, no CA bundle: plain HTTP on loopback
    return session


def test_without_the_credential_401(demo: Demo) -> None:
    http = _http()
    for path in ("/", "/c/anything", "/static/console.css", "/streams"):
        answer = http.get(demo.base + path, timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = http.get(demo.base + "/", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    bad_basic = http.get(demo.base + "/", auth=(USER, "wrong"), timeout=10)
    assert bad_basic.status_code == 401
    ok = http.get(demo.base + "/", auth=(USER, PASSWORD), timeout=10)
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "no-store"
    assert "script-src" not in ok.headers["Content-Security-Policy"]  # none allowed
    assert "<script" not in ok.text
    missing = http.get(demo.base + "/c/no-such-id", auth=(USER, PASSWORD), timeout=10)
    assert missing.status_code == 404
    # read-only: nothing answers a write
    post = http.post(demo.base + "/", auth=(USER, PASSWORD), timeout=10)
    assert post.status_code == 405


def test_bridge_run_listener_serves_the_console_beside_health(demo: Demo) -> None:
    """``bridge run`` mounts the console on its HTTP listener under /console/."""
    credentials = Credentials(token=SecretStr(TOKEN))
    port = free_port()
    server = HealthServer(
        lambda: {"ledger": Check(True)},
        host="127.0.0.1",
        port=port,
        console=console_app(demo.ledger, credentials),
    )
    server.start()
    try:
        http = _http()
        base = f"http://127.0.0.1:{port}"
        assert http.get(base + "/healthz", timeout=10).status_code == 200
        assert http.get(base + "/console/", timeout=10).status_code == 401
        page = http.get(
            base + "/console/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert page.status_code == 200
        assert 'href="/console/static/console.css"' in page.text
        first = _truth(demo.ledger)[0]
        assert f'href="/console/c/{first}"' in page.text
    finally:
        server.stop()


def _bridge(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.app.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    (tmp_path / "secrets").mkdir(exist_ok=True)
    return {**env, "BRIDGE_SECRETS_DIR": str(tmp_path / "secrets"), **extra}


def test_bridge_console_serves_on_its_own(demo: Demo, tmp_path: Path) -> None:
    port = free_port()
    proc = _bridge(
        "console", "--ledger-url", demo.ledger.url, "--port", str(port),
        env=_env(tmp_path, BRIDGE_CONSOLE__TOKEN=TOKEN),
    )  # fmt: skip
    try:
        http, base = _http(), f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                home = http.get(base + "/", timeout=5, allow_redirects=False)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "bridge console did not start"
                time.sleep(0.2)
        assert (home.status_code, home.headers["location"]) == (307, "/console/")
        assert http.get(base + "/console/", timeout=5).status_code == 401
        page = http.get(base + "/console/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert page.status_code == 200
        assert _truth(demo.ledger)[0] in page.text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_bridge_console_needs_a_credential(demo: Demo, tmp_path: Path) -> None:
    proc = _bridge("console", "--ledger-url", demo.ledger.url, env=_env(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "BRIDGE_CONSOLE__TOKEN or BRIDGE_CONSOLE__USERNAME" in err
