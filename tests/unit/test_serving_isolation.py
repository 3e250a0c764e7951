"""graft.serving.isolation: a bad request gets its own 4xx, the requests batched with it still succeed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from graft.serving.isolation import Rejected, each_or_rejected, first_rejection, read_body
from graft.serving.protocol import Limits, RequestError, parse_predict_body

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


def lengths(texts: list[str]) -> list[int]:
    """A batch function that, like a tokenizer, raises for the whole batch when one input is bad."""
    if any("\x00" in t for t in texts):
        raise ValueError("input contains NUL")
    return [len(t) for t in texts]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_good_batch_runs_once() -> None:
    calls: list[int] = []

    def fn(items: list[str]) -> list[int]:
        calls.append(len(items))
        return lengths(items)

    assert each_or_rejected(fn, ["a", "bb"]) == [1, 2]
    assert calls == [2]


def test_a_bad_item_is_rejected_alone_and_the_others_still_get_results() -> None:
    results = each_or_rejected(lengths, ["good", "bad\x00", "fine!"])
    assert results[0] == 4 and results[2] == 5
    assert isinstance(results[1], Rejected) and "NUL" in results[1].reason


def test_the_request_owning_the_bad_item_gets_422_naming_it() -> None:
    err = first_rejection([4, Rejected("ValueError: input contains NUL")], lambda i: f"texts[{i}]")
    assert err is not None and err.status == 422 and "texts[1]" in err.message and "NUL" in err.message
    assert first_rejection([4, 5], lambda i: f"texts[{i}]") is None


def test_chunked_body_over_the_limit_is_refused_while_reading() -> None:
    with pytest.raises(RequestError) as err:
        asyncio.run(read_body(chunks(b"x" * 600, b"y" * 600), limit=1000))
    assert err.value.status == 413


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(RequestError) as err:
        asyncio.run(read_body(chunks(), limit=1000, declared="5000"))
    assert err.value.status == 413


def test_body_within_the_limit_is_read_whole() -> None:
    assert asyncio.run(read_body(chunks(b'{"text":', b' "hi"}'), limit=1000)) == b'{"text": "hi"}'


def test_lone_surrogates_are_refused_with_422() -> None:
    with pytest.raises(RequestError) as err:
        parse_predict_body(b'{"texts": ["fine", "\\ud800"]}', Limits(100, 8))
    assert err.value.status == 422 and "texts[1]" in err.value.message
