"""Deterministic names, labels and annotations of the objects the operator owns."""

from __future__ import annotations

import hashlib
import re

from graft.api.base import API_GROUP, GROUP_VERSION

PREFIX = API_GROUP  # finalizers, annotations and labels live under graft.dev
MANAGED_BY = "graft-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = f"{PREFIX}/finetunejob"
LABEL_ENDPOINT = f"{PREFIX}/modelendpoint"
ANNOTATION_SPEC_HASH = f"{PREFIX}/spec-hash"  # on a RayService: the spec it was last updated to
ANNOTATION_MODEL_VERSION = f"{PREFIX}/model-version"
# KubeRay derives RayCluster names (name + 6 chars) from RayJob/RayService names: both are capped at 47.
MAX_RAY_NAME = 47
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def ray_name(name: str, max_len: int = MAX_RAY_NAME) -> str:
    """A DNS-1035 name of at most `max_len` characters derived from `name`: `name` itself when it
    already fits, else a readable prefix plus a short hash (stable, so a restart finds the same child)."""
    if len(name) <= max_len and _DNS1035.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    base = re.sub(r"[^-a-z0-9]", "-", name.lower())
    if not base[:1].isalpha():
        base = "g-" + base
    base = base[: max_len - len(digest) - 1].rstrip("-")
    return f"{base}-{digest}"


def run_dir(root: str, namespace: str, name: str, uid: str) -> str:
    """A job's own directory under a storage root: `<root>/<namespace>/<name>-<uid8>` (design.md 3), so
    tenants and a re-created job of the same name never share checkpoints, results or models."""
    if not uid:
        raise ValueError(f"FineTuneJob {namespace}/{name} has no metadata.uid")
    return f"{root.rstrip('/')}/{namespace}/{name}-{uid[:8]}"


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, object]:
    """A controller ownerReference: Kubernetes garbage collection deletes the child with its owner."""
    if not uid:
        raise ValueError(f"{kind} {name!r} has no metadata.uid; children need the owner's uid")
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_labels(job_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: job_name}


def endpoint_labels(endpoint_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ENDPOINT: endpoint_name}


def rayservice_url(service_name: str, namespace: str, port: int = 8000) -> str:
    """In-cluster URL of a RayService's serve Service (KubeRay names it `<name>-serve-svc`)."""
    return f"http://{service_name}-serve-svc.{namespace}.svc:{port}/"


__all__ = ["GROUP_VERSION", "PREFIX"]
