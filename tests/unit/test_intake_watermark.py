"""A stream's watermark settles once the overlap window behind it has been read after the
window passed; what it stores round-trips through its encoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.flow.intake import Watermark

AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
OVERLAP = timedelta(seconds=5)
NOW = AT + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("mark", "expected"),
    [
        # an earlier release's cursor: when it was reached is stamped first
        (Watermark(AT, "k"), Watermark(AT, "k", reached=NOW)),
        # reached less than the overlap ago: late commits may still come
        (Watermark(AT, reached=NOW - timedelta(seconds=4)), None),
        # reached the overlap ago: this poll read the whole window, it settles
        (
            Watermark(AT, reached=NOW - OVERLAP),
            Watermark(AT, reached=NOW - OVERLAP, settled=True),
        ),
        # settled: nothing more to store
        (Watermark(AT, reached=NOW - OVERLAP, settled=True), None),
    ],
    ids=["earlier release", "young", "window passed", "settled"],
)
def test_a_watermark_settles_after_its_window(mark: Watermark, expected: Watermark | None) -> None:
    after = mark.after_window(NOW, OVERLAP)
    assert after == expected
    if expected is not None:
        assert after is not None
        assert (after.reached, after.settled) == (expected.reached, expected.settled)


@pytest.mark.parametrize(
    "mark",
    [
        Watermark(AT),
        Watermark(AT, "abc", reached=NOW),
        Watermark(AT, "abc", reached=NOW, settled=True),
    ],
    ids=["position only", "reached", "settled"],
)
def test_a_watermark_round_trips(mark: Watermark) -> None:
    decoded = Watermark.decode(mark.encode())
    assert (decoded, decoded.reached, decoded.settled) == (mark, mark.reached, mark.settled)


def test_the_position_alone_keeps_the_earlier_encoding() -> None:
    assert Watermark(AT, "abc").encode() == '{"at": "2026-01-05T09:30:00+00:00", "key": "abc"}'
