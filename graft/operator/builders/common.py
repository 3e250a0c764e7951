"""Pieces shared by the RayJob and RayService builders: quantities, containers, pod templates."""

from __future__ import annotations

import copy
import posixpath
from decimal import Decimal
from typing import Any

from graft.operator.settings import OperatorSettings
from graft.storage import STORAGE_UMASK

STORAGE_VOLUME = "graft-storage"
# KubeRay runs a Ray container as `/bin/bash -c -- "<command> <args> && ulimit -n 65536; ray start ..."`
# (v1.6.0 common/pod.go BuildPod; no login shell unless its ENABLE_LOGIN_SHELL is set, so an image's
# /etc/profile.d is not read): this umask applies to `ray start` and every Ray process below it.
RAY_CONTAINER_ARGS = [f"umask {STORAGE_UMASK:04o}"]


def cpu_quantity(cpus: float) -> str:
    """1 -> "1", 1.5 -> "1500m" (Kubernetes canonical forms)."""
    milli = int((Decimal(str(cpus)) * 1000).to_integral_value())
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def resources(cpu: str, memory: str, gpus: float = 0, cpu_limit: str | None = None) -> dict[str, dict[str, str]]:
    """Requests equal to limits, as Ray recommends (Ray sizes itself from the limits), except a
    `cpu_limit` above the request where Ray does not size itself from it (heads: num-cpus 0)."""
    amounts = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(int(gpus)) if float(gpus).is_integer() else str(gpus)
    return {"requests": dict(amounts), "limits": {**amounts, "cpu": cpu_limit or cpu}}


def pod_template(
    *,
    container_name: str,
    image: str,
    settings: OperatorSettings,
    container_resources: dict[str, dict[str, str]],
    labels: dict[str, str],
    volumes: list[dict[str, Any]] | None = None,
    volume_mounts: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    vols = list(volumes or [])
    mounts = list(volume_mounts or [])
    if settings.storage_pvc:
        vols.append({"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": settings.storage_pvc}})
        mounts.append({"name": STORAGE_VOLUME, "mountPath": settings.storage_mount_path})
    container: dict[str, Any] = {
        "name": container_name,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": list(RAY_CONTAINER_ARGS),
        "resources": container_resources,
    }
    if mounts:
        container["volumeMounts"] = mounts
    if ports:
        container["ports"] = ports
    spec: dict[str, Any] = {"containers": [container]}
    if vols:
        spec["volumes"] = vols
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def worker_group(
    name: str,
    *,
    replicas: int,
    min_replicas: int,
    max_replicas: int,
    image: str,
    settings: OperatorSettings,
    container_resources: dict[str, dict[str, str]],
    labels: dict[str, str],
) -> dict[str, Any]:
    """A KubeRay worker group of Ray worker pods."""
    return {
        "groupName": name,
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
        "template": pod_template(
            container_name="ray-worker",
            image=image,
            settings=settings,
            container_resources=container_resources,
            labels=labels,
        ),
    }


def namespace_mount_path(settings: OperatorSettings, namespace: str) -> str:
    """Where a namespace's Ray pods mount its storage claim: `<storageMountPath>/<namespace>`, the
    same path the operator sees that namespace's part at (it mounts the whole root)."""
    return posixpath.join(settings.storage_mount_path, namespace)


def with_namespace_storage(cluster_spec: dict[str, Any], namespace: str, settings: OperatorSettings) -> dict[str, Any]:
    """A copy of a RayCluster spec whose pods mount the storage claim of `namespace` (backed by that
    namespace's part of the storage only, docs/install.md#storage) at `namespace_mount_path`, so the
    paths a job writes are the same in its pods and in the operator, and which run with the storage
    group as a supplemental group (directories on the storage are setgid 2770 of that group: the Ray
    pods, uid 1000, write and the operator, uid 65532, reads; no one else)."""
    if not settings.storage_pvc:
        return cluster_spec
    out = copy.deepcopy(cluster_spec)
    for group in [out["headGroupSpec"], *out["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        for container in pod["containers"]:
            for mount in container.get("volumeMounts") or []:
                if mount["name"] == STORAGE_VOLUME:
                    mount["mountPath"] = namespace_mount_path(settings, namespace)
        security = pod.setdefault("securityContext", {})
        groups = security.setdefault("supplementalGroups", [])
        if settings.storage_group not in groups:
            groups.append(settings.storage_group)
    return out
