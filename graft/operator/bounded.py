"""Bounded reads of documents the operator does not control (job logs, job lists): a tenant's job
can print gigabytes; the operator must never hold more than a fixed amount of it (issue 8 item 12)."""

from __future__ import annotations

import json
from typing import Any

import httpx

MAX_LOG_BYTES = 16 * 1024 * 1024  # a job log read through the Ray dashboard; the result itself is on storage


class TooLarge(ValueError):
    """The response passed the limit; nothing more of it was read."""


def get_json(url: str, limit: int, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status code, decoded JSON body or None) of a GET with `headers`, reading at most `limit` bytes."""
    with httpx.stream("GET", url, timeout=timeout, headers=headers) as resp:
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"{url} answered more than {limit} bytes; not read further")
        if resp.status_code != 200:
            return resp.status_code, None
    return 200, json.loads(bytes(body)) if body else None
