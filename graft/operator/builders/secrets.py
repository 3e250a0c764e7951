"""Secret references of a FineTuneJob -> `env` / `envFrom` of every Ray container of its RayJob.

Only references travel: the pods' kubelet reads the Secret, never the operator (it has no access to
Secrets), and no value lands in the RayJob, its runtime env, a ConfigMap, the status or an event.
"""

from __future__ import annotations

import copy
from typing import Any

from graft.api.spec import RuntimeSpec


def secret_env(runtime: RuntimeSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(`env` entries with valueFrom.secretKeyRef, `envFrom` entries with secretRef)."""
    env = [
        {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret_key_ref.name, "key": e.secret_key_ref.key,
                                                         "optional": e.secret_key_ref.optional}}}
        for e in runtime.secret_env
    ]
    env_from = [{"secretRef": {"name": s.name, "optional": s.optional}} for s in runtime.env_from_secrets]
    return env, env_from


def with_secret_env(cluster_spec: dict[str, Any], runtime: RuntimeSpec) -> dict[str, Any]:
    """A copy of a RayCluster spec whose head and worker containers carry the Secret references."""
    env, env_from = secret_env(runtime)
    if not env and not env_from:
        return cluster_spec
    out = copy.deepcopy(cluster_spec)
    groups = [out.get("headGroupSpec") or {}] + list(out.get("workerGroupSpecs") or [])
    for group in groups:
        for container in ((group.get("template") or {}).get("spec") or {}).get("containers") or []:
            container["env"] = list(container.get("env") or []) + env
            container["envFrom"] = list(container.get("envFrom") or []) + env_from
    return out
