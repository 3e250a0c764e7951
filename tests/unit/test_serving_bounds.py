"""Serving bounds on the wire (issue 21, finding 10): a hostile client's chunked body to an
OpenAI-compatible route is refused with 413 once it passes the limit, without the rest being read.

Real HTTP (uvicorn) in front of the routes' own body reader, `llm_app.read_generation_request`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from graft.serving.llm_app import read_generation_request
from graft.serving.openai_protocol import ApiError, GenerationRequest, Limits, parse_chat, parse_completion
from tests.unit.live_http import BodyCounter, live_server, post_chunked

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

LIMITS = Limits(max_text_length=20000, max_tokens=16)  # body limit: 12 x 20000 + 64 KiB, about 0.3 MiB
ATTACK = 300 * 1024 * 1024
ROUTES: dict[str, Callable[..., GenerationRequest]] = {"/v1/chat/completions": parse_chat, "/v1/completions": parse_completion}


def openai_routes() -> FastAPI:
    api = FastAPI()
    for path, parse in ROUTES.items():
        async def route(request: Request, parse: Callable[..., GenerationRequest] = parse) -> JSONResponse:
            try:
                await read_generation_request(request, parse, LIMITS, "m")
            except ApiError as err:
                return JSONResponse(err.body(), status_code=err.status)
            return JSONResponse({"ok": True})

        api.post(path)(route)
    return api


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_chunked_300_mib_body_is_refused_after_reading_about_the_limit(path: str) -> None:
    counter = BodyCounter(openai_routes())
    with live_server(counter) as address:
        result = post_chunked(address, path, ATTACK)
    assert result.status == 413, result.head
    # The app stopped at the first message past the limit (uvicorn hands over what one socket read
    # brought, up to a few chunks): about 0.3 MiB read, not 300.
    assert counter.received <= LIMITS.body_bytes + 256 * 1024
    assert result.sent < 32 * 1024 * 1024  # and the client could not push the 300 MiB (socket buffers only)
