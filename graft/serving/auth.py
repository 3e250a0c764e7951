"""The optional bearer token of a served endpoint (ModelEndpoint `spec.auth.bearerTokenSecret`).

The token reaches the serving pods as the environment variable `BEARER_TOKEN_ENV`, from the
endpoint's Secret through a secretKeyRef (the kubelet reads the Secret, the operator never does).
When the variable is set, `BearerTokenMiddleware` answers 401 with `WWW-Authenticate: Bearer` to
every request without `Authorization: Bearer <token>` (compared in constant time), except the
health and readiness routes in `OPEN_PATHS`, before the route reads any of the body. Without the
token, `/healthz` answers only `{"status": "ok"}`: its details (model location, labels, limits)
are for token holders.
`check_token_present` makes a replica whose args require a token and whose pod lacks it refuse to
start, so a missing token never serves openly.
"""

from __future__ import annotations

import hmac
import os

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from graft.api.endpoint import BEARER_TOKEN_ENV

OPEN_PATHS = frozenset({"/healthz", "/v2/health/ready", "/v2/health/live"})
DETAILED_HEALTH = "/healthz"


class MissingTokenError(RuntimeError):
    """The endpoint requires a bearer token but the replica's environment has none."""


def configured_token() -> str | None:
    """The token this replica requires, or None when it serves without one."""
    return os.environ.get(BEARER_TOKEN_ENV) or None


def check_token_present(required: bool) -> None:
    """Raise MissingTokenError when `required` and no token is configured (fail closed)."""
    if required and configured_token() is None:
        raise MissingTokenError(
            f"this endpoint requires a bearer token but {BEARER_TOKEN_ENV} is not set in the replica's environment; "
            "check spec.auth.bearerTokenSecret names an existing Secret and key in the endpoint's namespace"
        )


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries exactly `token` as a Bearer credential."""
    scheme, _, credential = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credential.strip().encode(), token.encode())


def route_path(scope: Scope) -> str:
    """The request path below the application's route prefix (Serve's `root_path`)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


class BearerTokenMiddleware:
    """ASGI middleware: 401 for requests without the configured bearer token (no token: a no-op)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = configured_token()
        if token is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        path = route_path(scope)
        if authorized(header, token) or (path in OPEN_PATHS and path != DETAILED_HEALTH):
            await self.app(scope, receive, send)
            return
        if path == DETAILED_HEALTH:  # probes need the 200, not the details
            await JSONResponse({"status": "ok"})(scope, receive, send)
            return
        reason = "no bearer token was sent" if not header else "the bearer token is not valid"
        response = JSONResponse(
            {"error": f"{reason}; send the header 'Authorization: Bearer <token>' with the token from the endpoint's Secret"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="graft"'},
        )
        await response(scope, receive, send)
