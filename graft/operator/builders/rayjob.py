"""FineTuneJob -> KubeRay `ray.io/v1` RayJob. The spec the job runs travels inside the RayJob's
entrypoint (`--spec-b64`): one object, written by the operator only, nothing a tenant can pre-create."""

from __future__ import annotations

import json
import shlex
from typing import Any

import yaml

from graft.api.argcodec import encode_arg
from graft.api.spec import POD_SIZED_WORKERS_ENV, WORKER_POD_RESOURCE, FineTuneJob
from graft.operator.builders.common import cpu_quantity, pod_template, resources, with_namespace_storage, worker_group
from graft.operator.builders.secrets import with_secret_env
from graft.operator.builders.statekey import with_state_key
from graft.operator.names import job_labels, owner_reference, ray_name
from graft.operator.rayauth import auth_options
from graft.operator.result import RESULT_FILE
from graft.operator.settings import OperatorSettings
from graft.operator.storage import job_dir, storage_root

WORKER_GROUP = "workers"
LOCAL_RESULT_DIR = "/tmp/graft"


def _meta(job: FineTuneJob) -> tuple[str, str, str]:
    uid = job.metadata.uid_or_empty()
    if not job.metadata.namespace:
        raise ValueError(f"FineTuneJob {job.metadata.name!r} has no metadata.namespace")
    return job.metadata.name, job.metadata.namespace, uid


def job_owner(job: FineTuneJob) -> dict[str, object]:
    name, _, uid = _meta(job)
    return owner_reference(job.api_version, job.kind, name, uid)


def spec_document(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    """What the job runs: the FineTuneJob with defaults applied, metadata reduced to name,
    namespace and uid, and checkpoints.storage set to the storage root (spec's, else the
    operator's). The job puts everything under `<root>/<namespace>/<name>-<uid8>/` itself
    (graft.storage.job_dir, the same directory as `job_dir` here) and names its Tune experiment
    after the uid, so every attempt of the job (RayJob retry, resubmit, resume) resumes it."""
    wire = job.to_wire()
    uid = job.metadata.uid_or_empty()
    wire["metadata"] = {"name": job.metadata.name, "namespace": job.metadata.namespace, **({"uid": uid} if uid else {})}
    root = storage_root(job, settings)
    if root:
        wire["spec"].setdefault("checkpoints", {})["storage"] = root
    return wire


def job_result_uri(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    own = job_dir(job, settings)
    return f"{own}/{RESULT_FILE}" if own else None


def entrypoint(job: FineTuneJob, settings: OperatorSettings) -> str:
    """`python -m graft.jobs --spec-b64 <spec> --result-b64 <uri>`.

    Both values are base64 (graft.api.argcodec): no byte the tenant wrote (label names, column
    names, a storage URI) appears raw in the command line, whichever shell KubeRay's submission
    mode runs it through. Without result storage the result goes to the head pod's disk and
    reaches the operator through the job log's GRAFT_RESULT line instead."""
    uri = job_result_uri(job, settings) or f"{LOCAL_RESULT_DIR}/{job.metadata.name}/{RESULT_FILE}"
    spec = json.dumps(spec_document(job, settings), separators=(",", ":"), sort_keys=True)
    return shlex.join(["python", "-m", "graft.jobs", "--spec-b64", encode_arg(spec), "--result-b64", encode_arg(uri)])


def runtime_env(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    env = {**job.spec.runtime.env, **settings.job_env}  # keys the operator sets cannot be overridden
    return {"env_vars": env}


def _pod_sized(env: dict[str, Any]) -> dict[str, Any]:
    """The RayJob's runtime env: its worker pods are sized by resources.memoryPerWorker, so graft.jobs
    does not also reserve that memory as a Ray resource (which a pod of exactly that size cannot offer)."""
    return {**env, "env_vars": {**env["env_vars"], POD_SIZED_WORKERS_ENV: "1"}}


def _cluster_spec(job: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    name, _, _ = _meta(job)
    res = job.spec.resources
    image = job.spec.runtime.image or settings.ray_image
    labels = job_labels(name)
    head: dict[str, Any] = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": pod_template(
            container_name="ray-head",
            image=image,
            settings=settings,
            container_resources=resources(settings.head_cpu, settings.head_memory, cpu_limit=settings.head_cpu_limit),
            labels=labels,
            ports=[
                {"name": "gcs", "containerPort": 6379},
                {"name": "dashboard", "containerPort": 8265},
                {"name": "client", "containerPort": 10001},
            ],
        ),
    }
    if settings.driver_resource:
        # Trial drivers take the custom resource, so the head needs no CPU for Ray: Train workers
        # never land on it (without the resource, trial drivers need a CPU fraction there).
        # KubeRay refuses a group that sets Ray resources both here and in rayStartParams.
        head["resources"] = {"cpu": "0", settings.driver_resource: str(job.spec.tuning.max_concurrent_trials)}
    # Sized for maxConcurrentTrials trials side by side (issue 12), one Train worker per pod.
    pods = res.workers * min(job.spec.tuning.max_concurrent_trials, job.spec.tuning.num_trials)
    worker = worker_group(
        WORKER_GROUP,
        replicas=pods,
        min_replicas=pods,
        max_replicas=pods,
        image=image,
        settings=settings,
        container_resources=resources(
            cpu_quantity(res.cpus_per_worker), res.memory_per_worker or settings.worker_memory, res.gpus_per_worker
        ),
        labels=labels,
    )
    worker["resources"] = {WORKER_POD_RESOURCE: "1"}  # one Train worker per pod (graft.jobs.tune.worker_resources)
    # Ray token authentication: only holders of the token (KubeRay, the operator, the cluster's own
    # pods) may submit jobs or call the dashboard (graft.operator.rayauth).
    return {"rayVersion": settings.ray_version, "authOptions": auth_options(ray_name(name)),
            "headGroupSpec": head, "workerGroupSpecs": [worker]}


CLUSTER_TTL_SECONDS = 60


def build_rayjob(job: FineTuneJob, settings: OperatorSettings, state_key_secret: str | None = None) -> dict[str, Any]:
    """The RayJob that runs `graft.jobs` for this FineTuneJob (with its admitted runtime values
    applied), owned by it: garbage collection deletes it with the job. `state_key_secret`: the
    Secret holding the job's state key (graft.operator.builders.statekey), given to every container."""
    name, namespace, _ = _meta(job)
    rt = job.spec.runtime
    spec: dict[str, Any] = {
        "entrypoint": entrypoint(job, settings),
        "runtimeEnvYAML": yaml.safe_dump(_pod_sized(runtime_env(job, settings)), sort_keys=True),
        "submissionMode": settings.submission_mode,
        "backoffLimit": rt.backoff_limit,
    }
    if rt.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = rt.active_deadline_seconds
    spec["rayClusterSpec"] = with_secret_env(_cluster_spec(job, settings), job.spec.runtime.secret_env)  # references only
    if state_key_secret:
        spec["rayClusterSpec"] = with_state_key(spec["rayClusterSpec"], state_key_secret)
    spec["rayClusterSpec"] = with_namespace_storage(spec["rayClusterSpec"], namespace, settings)  # its own part only
    # KubeRay deletes the Ray cluster this long after the job ends: long enough for the operator to
    # copy the job's log through the dashboard, short enough not to hold the nodes (the RayJob
    # object itself is deleted by the operator after spec.runtime.ttlSecondsAfterFinished).
    spec["shutdownAfterJobFinishes"] = True
    spec["ttlSecondsAfterFinished"] = min(rt.ttl_after_finished, CLUSTER_TTL_SECONDS)
    spec["suspend"] = job.spec.suspend
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": ray_name(name),
            "namespace": namespace,
            "labels": job_labels(name),
            "ownerReferences": [job_owner(job)],
        },
        "spec": spec,
    }
