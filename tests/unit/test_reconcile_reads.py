"""The read helpers the reconcilers share: paging, id forms, reading ahead."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bridge.reconcile.reads import chunks, read_ahead, sf18


@pytest.mark.parametrize(
    ("items", "size", "expected"),
    [
        ([], 2, []),
        ([1], 2, [[1]]),
        ([1, 2, 3, 4, 5], 2, [[1, 2], [3, 4], [5]]),
        ([1, 2], 2, [[1, 2]]),
    ],
)
def test_chunks(items: list[int], size: int, expected: list[list[int]]) -> None:
    assert list(chunks(items, size)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0055g0000000001", "0055g0000000001AAA"),
        ("0055g0000000001AAA", "0055g0000000001AAA"),
        ("not an id", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_sf18(value: object, expected: str | None) -> None:
    assert sf18(value) == expected


def test_read_ahead_keeps_order_and_reads_on_another_thread() -> None:
    readers: set[str] = set()

    def pages() -> Iterator[list[int]]:
        for n in range(5):
            readers.add(threading.current_thread().name)
            yield [n]

    assert list(read_ahead(pages())) == [[0], [1], [2], [3], [4]]
    assert all(name.startswith("reconcile-read") for name in readers)


def test_read_ahead_raises_the_read_error_where_the_page_would_be() -> None:
    def pages() -> Iterator[list[int]]:
        yield [1]
        raise ConnectionError("dropped")

    got = read_ahead(pages())
    assert next(got) == [1]
    with pytest.raises(ConnectionError, match="dropped"):
        next(got)


def test_read_ahead_reads_at_most_one_page_ahead() -> None:
    read: list[int] = []

    def pages() -> Iterator[list[int]]:
        for n in range(10):
            read.append(n)
            yield [n]

    got = read_ahead(pages())
    assert next(got) == [0]
    got.close()
    assert read in ([0], [0, 1])
