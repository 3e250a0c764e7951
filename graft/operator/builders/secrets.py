"""Secret references of a FineTuneJob or ModelEndpoint -> `env` / `envFrom` of every Ray container
of its RayJob or RayService.

Only references travel: the pods' kubelet reads the Secret, never the operator (it has no access to
Secrets), and no value lands in the RayJob, its runtime env, a ConfigMap, the status or an event.
"""

from __future__ import annotations

import copy
from typing import Any

from graft.api.spec import SecretEnvSource, SecretEnvVar


def secret_env(
    secret_env: list[SecretEnvVar], env_from_secrets: list[SecretEnvSource],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(`env` entries with valueFrom.secretKeyRef, `envFrom` entries with secretRef)."""
    env = [
        {"name": e.name, "valueFrom": {"secretKeyRef": {"name": e.secret_key_ref.name, "key": e.secret_key_ref.key,
                                                         "optional": e.secret_key_ref.optional}}}
        for e in secret_env
    ]
    env_from = [{"secretRef": {"name": s.name, "optional": s.optional}} for s in env_from_secrets]
    return env, env_from


def with_secret_env(
    cluster_spec: dict[str, Any], secret_env_vars: list[SecretEnvVar], env_from_secrets: list[SecretEnvSource],
) -> dict[str, Any]:
    """A copy of a RayCluster spec whose head and worker containers carry the Secret references
    (`spec.runtime.secretEnv`/`envFromSecrets` of a job, `spec.secretEnv`/`envFromSecrets` of an endpoint)."""
    env, env_from = secret_env(secret_env_vars, env_from_secrets)
    if not env and not env_from:
        return cluster_spec
    out = copy.deepcopy(cluster_spec)
    groups = [out.get("headGroupSpec") or {}] + list(out.get("workerGroupSpecs") or [])
    for group in groups:
        for container in ((group.get("template") or {}).get("spec") or {}).get("containers") or []:
            container["env"] = list(container.get("env") or []) + env
            container["envFrom"] = list(container.get("envFrom") or []) + env_from
    return out
