"""FineTuneJob -> KubeRay `ray.io/v1` RayJob (+ the ConfigMap holding the spec the job reads)."""

from __future__ import annotations

import hashlib
import json
import shlex
from typing import Any

import yaml

from graft.api.spec import FineTuneJob
from graft.operator.builders.common import UnsupportedSpec, cpu_quantity, pod_template, resources, worker_group
from graft.operator.names import (
    ANNOTATION_SPEC_HASH,
    job_labels,
    owner_reference,
    ray_name,
    spec_configmap_name,
)
from graft.operator.result import result_uri
from graft.operator.settings import OperatorSettings

SPEC_MOUNT = "/etc/graft/spec"
SPEC_KEY = "finetunejob.yaml"
SPEC_VOLUME = "graft-spec"
WORKER_GROUP = "workers"


def _meta(job: FineTuneJob) -> tuple[str, str, str]:
    extra = job.metadata.model_extra or {}
    uid = str(extra.get("uid") or "")
    if not job.metadata.namespace:
        raise ValueError(f"FineTuneJob {job.metadata.name!r} has no metadata.namespace")
    return job.metadata.name, job.metadata.namespace, uid


def job_owner(job: FineTuneJob) -> dict[str, object]:
    name, _, uid = _meta(job)
    return owner_reference(job.api_version, job.kind, name, uid)


def spec_document(job: FineTuneJob) -> dict[str, Any]:
    """What the job reads: the FineTuneJob with defaults applied, metadata reduced to name/namespace."""
    wire = job.to_wire()
    wire["metadata"] = {"name": job.metadata.name, "namespace": job.metadata.namespace}
    return wire


def spec_hash(job: FineTuneJob) -> str:
    doc = spec_document(job)
    return hashlib.sha256(json.dumps(doc["spec"], sort_keys=True).encode()).hexdigest()[:16]


def build_spec_configmap(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    name, namespace, _ = _meta(job)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": spec_configmap_name(name),
            "namespace": namespace,
            "labels": job_labels(name),
            "annotations": {ANNOTATION_SPEC_HASH: spec_hash(job)},
            "ownerReferences": [job_owner(job)],
        },
        "data": {SPEC_KEY: yaml.safe_dump(spec_document(job), sort_keys=False)},
    }


def job_result_uri(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    name, _, uid = _meta(job)
    return result_uri(job.spec.checkpoints.storage or settings.result_storage, name, uid)


LOCAL_RESULT_DIR = "/tmp/graft"


def entrypoint(job: FineTuneJob, settings: OperatorSettings) -> str:
    """`python -m graft.jobs --spec <mounted ConfigMap> --result <uri>`, shell-quoted.

    Without result storage the result goes to the head pod's disk and reaches the operator
    through the job log's GRAFT_RESULT line instead."""
    uri = job_result_uri(job, settings) or f"{LOCAL_RESULT_DIR}/{job.metadata.name}/result.json"
    return shlex.join(["python", "-m", "graft.jobs", "--spec", f"{SPEC_MOUNT}/{SPEC_KEY}", "--result", uri])


def runtime_env(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    env = {**settings.job_env, **job.spec.runtime.env}
    return {"env_vars": env}


def _cluster_spec(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    name, _, _ = _meta(job)
    res = job.spec.resources
    image = job.spec.runtime.image or settings.ray_image
    labels = job_labels(name)
    spec_volume = {"name": SPEC_VOLUME, "configMap": {"name": spec_configmap_name(name)}}
    spec_mount = {"name": SPEC_VOLUME, "mountPath": SPEC_MOUNT, "readOnly": True}
    head: dict[str, Any] = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": pod_template(
            container_name="ray-head",
            image=image,
            settings=settings,
            container_resources=resources(settings.head_cpu, settings.head_memory),
            labels=labels,
            volumes=[spec_volume],
            volume_mounts=[spec_mount],
            ports=[
                {"name": "gcs", "containerPort": 6379},
                {"name": "dashboard", "containerPort": 8265},
                {"name": "client", "containerPort": 10001},
            ],
        ),
    }
    if settings.driver_resource:
        head["resources"] = {settings.driver_resource: str(job.spec.tuning.max_concurrent_trials)}
    worker = worker_group(
        WORKER_GROUP,
        replicas=res.workers,
        min_replicas=res.workers,
        max_replicas=res.workers,
        image=image,
        settings=settings,
        container_resources=resources(
            cpu_quantity(res.cpus_per_worker), res.memory_per_worker or settings.worker_memory, res.gpus_per_worker
        ),
        labels=labels,
    )
    return {"rayVersion": settings.ray_version, "headGroupSpec": head, "workerGroupSpecs": [worker]}


def build_rayjob(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """The RayJob that runs `graft.jobs` for this FineTuneJob, owned by it (GC deletes it with the job)."""
    name, namespace, _ = _meta(job)
    rt = job.spec.runtime
    labels = job_labels(name)  # Kueue's queue label: graft.operator.policy.apply_kueue, at creation
    spec: dict[str, Any] = {
        "entrypoint": entrypoint(job, settings),
        "runtimeEnvYAML": yaml.safe_dump(runtime_env(job, settings), sort_keys=True),
        "submissionMode": settings.submission_mode,
        "backoffLimit": rt.backoff_limit,
    }
    if rt.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = rt.active_deadline_seconds
    if rt.cluster is not None:
        raise UnsupportedSpec(
            "spec.runtime.cluster",
            "running on a shared Ray cluster is supported by `graft run` only; on Kubernetes remove "
            "spec.runtime.cluster and the operator creates a RayJob cluster sized by spec.resources",
        )
    spec["rayClusterSpec"] = _cluster_spec(job, settings)
    spec["shutdownAfterJobFinishes"] = True
    spec["ttlSecondsAfterFinished"] = rt.ttl_after_finished
    spec["suspend"] = job.spec.suspend
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": ray_name(name),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_HASH: spec_hash(job)},
            "ownerReferences": [job_owner(job)],
        },
        "spec": spec,
    }
