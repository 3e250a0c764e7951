"""Request isolation on a shared replica: one bad request never fails the requests batched with it.

- `read_body`: reads a request body (declared length or chunked) and stops with 413 as soon as it
  passes the limit, so a chunked body cannot skip the size check.
- `each_or_rejected`: runs a batch function; when the whole batch raises, runs every item alone
  so that only the items that fail themselves are rejected (`Rejected`), each with its reason.
- `first_rejection`: the 422 a request gets when one of its own items was rejected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from graft.serving.protocol import RequestError

In = TypeVar("In")
Out = TypeVar("Out")

# What tokenizers, image transforms and models raise for an input they cannot take.
ITEM_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, RuntimeError, IndexError, KeyError, OverflowError)


@dataclass(frozen=True)
class Rejected:
    """An item the model could not process; `reason` is safe to show the client."""

    reason: str


async def read_body(chunks: AsyncIterator[bytes], limit: int, declared: str | None = None) -> bytes:
    """The whole body, refused with 413 once it exceeds `limit` bytes (checked on the declared
    Content-Length first, then on what actually arrives: chunked bodies declare nothing)."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the request body has {declared} bytes, more than the limit of {limit}; send less")
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise RequestError(413, f"the request body is larger than the limit of {limit} bytes; send less")
    return bytes(received)


def each_or_rejected(fn: Callable[[list[In]], list[Out]], items: Sequence[In]) -> list[Out | Rejected]:
    """`fn(items)`; if that raises for the batch, `fn([item])` for each item, with `Rejected` in
    place of the results of the items that raise on their own."""
    try:
        return list(fn(list(items)))
    except ITEM_ERRORS:
        pass
    out: list[Out | Rejected] = []
    for item in items:
        try:
            out.extend(fn([item]))
        except ITEM_ERRORS as exc:
            out.append(Rejected(f"{type(exc).__name__}: {str(exc)[:300]}"))
    return out


def first_rejection(results: Sequence[object], label: Callable[[int], str]) -> RequestError | None:
    """A 422 naming the request's first rejected item (`label(i)`, e.g. `texts[2]`), else None."""
    for i, result in enumerate(results):
        if isinstance(result, Rejected):
            return RequestError(422, f"{label(i)} cannot be processed by the model ({result.reason}); fix or remove it")
    return None
