"""Ray token authentication of the Ray clusters Graft creates (KubeRay `spec.authOptions`, mode token).

Every RayJob and RayService Graft builds names a token Secret (`<ray name>-ray-auth`, key
`auth_token`) that the operator creates before the RayJob/RayService, owned by the FineTuneJob or
ModelEndpoint. The token is an HMAC of the owner's namespace, name and uid under the operator's key
(a Secret in the release namespace, mounted into the operator pod and named by
`OperatorSettings.ray_auth_key_file`), so the operator can present it on every dashboard call
without ever reading a Secret. KubeRay reads it to start the Ray containers (`RAY_AUTH_MODE=token`,
`RAY_AUTH_TOKEN`) and to authenticate its own submission and health checks.

Standard library only: `graft logs` imports the names from here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any

AUTH_TOKEN_KEY = "auth_token"  # KubeRay's utils.RAY_AUTH_TOKEN_SECRET_KEY
AUTH_SECRET_SUFFIX = "-ray-auth"
# Ray's dashboard reads the token from `Authorization` or, behind proxies that consume that header
# (the API server's service proxy), from `X-Ray-Authorization` (ray/_private/authentication).
AUTH_HEADER = "X-Ray-Authorization"
MIN_KEY_BYTES = 32

log = logging.getLogger("graft.operator")


class RayAuthKeyError(ValueError):
    """The operator key file is missing, unreadable or too short."""


def auth_secret_name(ray_name: str) -> str:
    """The token Secret of the RayJob or RayService named `ray_name` (a DNS-1035 name of at most
    47 characters, so the Secret's name stays a valid DNS subdomain)."""
    return f"{ray_name}{AUTH_SECRET_SUFFIX}"


def auth_options(ray_name: str) -> dict[str, Any]:
    """The RayCluster spec's `authOptions`: token mode with the Secret the operator creates."""
    return {"mode": "token", "secretName": auth_secret_name(ray_name)}


def auth_headers(token: str | None) -> dict[str, str]:
    """The header a Ray dashboard with token authentication accepts; none without a token."""
    return {AUTH_HEADER: f"Bearer {token}"} if token else {}


@functools.cache
def operator_key(path: str | None) -> bytes:
    """The operator's HMAC key, read once from `path`. Without a path, a random key for this process
    (tokens then change when the operator restarts: only calls to clusters created before the
    restart are refused, e.g. the copy of a finished job's log, which falls back to storage)."""
    if path is None:
        log.warning("no ray_auth_key_file: Ray cluster tokens are derived from a random per-process key")
        return secrets.token_bytes(MIN_KEY_BYTES)
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise RayAuthKeyError(f"cannot read the Ray auth key file {path}: {exc}") from exc
    if len(key) < MIN_KEY_BYTES:
        raise RayAuthKeyError(f"the Ray auth key in {path} has {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


def derive_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    """The Ray token of the cluster owned by the object `namespace/name` with `uid` (hex, 64 chars):
    a re-created object of the same name gets a different token."""
    if not uid:
        raise ValueError(f"{namespace}/{name} has no metadata.uid; its Ray token needs one")
    return hmac.new(key, f"{namespace}/{name}/{uid}".encode(), hashlib.sha256).hexdigest()


def auth_secret(
    *, namespace: str, ray_name: str, token: str, labels: dict[str, str], owner: dict[str, object],
) -> dict[str, Any]:
    """The token Secret KubeRay reads (`authOptions.secretName`), owned by the Graft object."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": auth_secret_name(ray_name),
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "stringData": {AUTH_TOKEN_KEY: token},
    }


def cluster_token(key_file: str | None, namespace: str, name: str, uid: str) -> str:
    """The token of the Ray cluster owned by `namespace/name` (uid), under the operator's key."""
    return derive_token(operator_key(key_file), namespace, name, uid)
