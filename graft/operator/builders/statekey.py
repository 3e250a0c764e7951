"""The per-job state key of a FineTuneJob's RayJob (graft.api.statekey): the Secret the operator
creates for it, and the env that hands it to every Ray container.

The Secret is created with `generateName`, so its name is one the API server picks at that moment:
no tenant can have created it first (with a key of its own choosing), and the operator needs no
`get` to know it holds Graft's key. Its key is random and never read back: the RayJob names the
Secret, the kubelet reads it. It is owned by the FineTuneJob and goes with it."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from graft.api.spec import FineTuneJob
from graft.api.statekey import STATE_KEY_ENV, STATE_KEY_SECRET_KEY, state_key_secret_prefix
from graft.operator.names import job_labels, owner_reference


def state_key_secret(job: FineTuneJob) -> dict[str, Any]:
    """A new Secret (generateName) holding a fresh random key, owned by `job`."""
    name = job.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "generateName": state_key_secret_prefix(name),
            "namespace": job.metadata.namespace,
            "labels": job_labels(name),
            "ownerReferences": [owner_reference(job.api_version, job.kind, name, job.metadata.uid_or_empty())],
        },
        "type": "Opaque",
        "stringData": {STATE_KEY_SECRET_KEY: secrets.token_hex(32)},
    }


def with_state_key(cluster_spec: dict[str, Any], secret_name: str) -> dict[str, Any]:
    """A copy of a RayCluster spec whose every container gets `GRAFT_STATE_KEY` from `secret_name`,
    replacing any other entry of that name (the last entry of a name wins in a pod)."""
    entry = {"name": STATE_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": STATE_KEY_SECRET_KEY}}}
    out = copy.deepcopy(cluster_spec)
    for group in [out.get("headGroupSpec") or {}, *(out.get("workerGroupSpecs") or [])]:
        for container in ((group.get("template") or {}).get("spec") or {}).get("containers") or []:
            container["env"] = [e for e in container.get("env") or [] if e.get("name") != STATE_KEY_ENV] + [entry]
    return out
