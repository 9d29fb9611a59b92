"""Logging: JSON lines or text, the correlation id on every line."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from bridge.logging import bind_correlation, configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_correlation_and_extras(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "auto", out)  # not a terminal: JSON
    log = logging.getLogger("bridge.test")
    with bind_correlation("c0ffee"):
        log.info("offered %s", "work", extra={"segment": 2})
    log.debug("hidden")
    log.warning("after")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message", "correlation_id", "segment")} == {
        "level": "INFO",
        "logger": "bridge.test",
        "message": "offered work",
        "correlation_id": "c0ffee",
        "segment": 2,
    }
    assert first["ts"].endswith("+00:00")
    assert (second["message"], second["correlation_id"]) == ("after", None)


def test_text_lines(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("debug", "text", out)
    with bind_correlation("abc"):
        logging.getLogger("bridge.x").debug("hello", extra={"n": 1})
    line = out.getvalue().strip()
    assert "DEBUG" in line
    assert line.endswith("bridge.x [abc] hello n=1")


def test_each_thread_sees_its_own_correlation(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)

    def work(corr: str) -> None:
        with bind_correlation(corr):
            logging.getLogger("bridge.t").info(corr)

    threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 8
    assert all(rec["message"] == rec["correlation_id"] for rec in lines)
