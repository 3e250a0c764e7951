"""Secret references of a FineTuneJob or ModelEndpoint -> `env` of every Ray container of its RayJob
or RayService.

Only named keys travel (`valueFrom.secretKeyRef`), never a whole Secret (`envFrom`), so every env name
is one admission checked against the allowlist. The pods' kubelet reads the Secret, never the operator
(it has no access to Secrets), and no value lands in the RayJob, its runtime env, a ConfigMap, the
status or an event.
"""

from __future__ import annotations

import copy
from typing import Any

from graft.api.spec import SecretEnvVar


def secret_env(secret_env: list[SecretEnvVar]) -> list[dict[str, Any]]:
    """`env` entries with valueFrom.secretKeyRef, one per named key."""
    return [
        {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret_key_ref.name, "key": e.secret_key_ref.key,
                                                         "optional": e.secret_key_ref.optional}}}
        for e in secret_env
    ]


def with_secret_env(cluster_spec: dict[str, Any], secret_env_vars: list[SecretEnvVar]) -> dict[str, Any]:
    """A copy of a RayCluster spec whose head and worker containers carry the named Secret keys
    (`spec.runtime.secretEnv` of a job, `spec.secretEnv` of an endpoint)."""
    env = secret_env(secret_env_vars)
    if not env:
        return cluster_spec
    out = copy.deepcopy(cluster_spec)
    groups = [out.get("headGroupSpec") or {}] + list(out.get("workerGroupSpecs") or [])
    for group in groups:
        for container in ((group.get("template") or {}).get("spec") or {}).get("containers") or []:
            container["env"] = list(container.get("env") or []) + env
    return out
