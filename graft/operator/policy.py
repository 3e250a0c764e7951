"""Tenant guardrails, pure: FineTunePolicy admission and the Kueue rules for RayJobs.

`admit` decides whether a new FineTuneJob may run under the FineTunePolicies that select its
namespace and returns the job with the policies' runtime defaults filled in; `apply_kueue`
makes a built RayJob Kueue-managed when the job names a queue. No I/O: the caller lists the
policies, reads the namespace labels and counts the namespace's unfinished jobs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from graft.api.policy import FineTunePolicy, source_allowed
from graft.api.references import referenced_name
from graft.api.spec import DEFAULT_TTL_SECONDS, FineTuneJob, RuntimeSpec

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A Kueue workload has at most 8 PodSets: the head group plus 7 worker groups.
KUEUE_MAX_WORKER_GROUPS = 7


@dataclass(frozen=True)
class Admission:
    """The outcome of `admit`.

    allowed: the job may run. violations: one message per broken rule, each naming the field,
    the limit and the policy. job: the job with runtime defaults applied (run this one).
    policies: names of the policies that selected the namespace. retryable: every violation is
    a capacity limit (maxConcurrentJobs) that may clear when other jobs finish. origin: which
    policy filled each defaulted runtime field ({wire field: policy name}).
    """

    allowed: bool
    violations: list[str]
    job: FineTuneJob
    policies: list[str] = field(default_factory=list)
    retryable: bool = False
    origin: dict[str, str] = field(default_factory=dict)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def matching_policies(namespace_labels: dict[str, str], policies: list[FineTunePolicy]) -> list[FineTunePolicy]:
    """The policies whose namespaceSelector selects a namespace with these labels, by name."""
    return sorted((p for p in policies if p.spec.selects(namespace_labels)), key=lambda p: p.name)


def apply_defaults(job: FineTuneJob, policies: list[FineTunePolicy]) -> tuple[FineTuneJob, dict[str, str]]:
    """A copy of `job` with runtime defaults filled where the job left them unset; the first
    policy (by name) that sets a default wins. Returns the job and {wire field: policy name}."""
    out = job.model_copy(deep=True)
    runtime = out.spec.runtime
    origin: dict[str, str] = {}
    for policy in sorted(policies, key=lambda p: p.name):
        defaults = policy.spec.runtime_defaults
        if defaults.image is not None and runtime.image is None:
            runtime.image = defaults.image
            origin["image"] = policy.name
        if defaults.queue_name is not None and runtime.queue_name is None:
            runtime.queue_name = defaults.queue_name
            origin["queueName"] = policy.name
        if defaults.active_deadline_seconds is not None and runtime.active_deadline_seconds is None:
            runtime.active_deadline_seconds = defaults.active_deadline_seconds
            origin["activeDeadlineSeconds"] = policy.name
        if (
            defaults.ttl_seconds_after_finished is not None
            and runtime.ttl_seconds_after_finished is None
        ):
            runtime.ttl_seconds_after_finished = defaults.ttl_seconds_after_finished
            origin["ttlSecondsAfterFinished"] = policy.name
    _fill_from_limits(runtime, policies, origin)
    return out, origin


def _fill_from_limits(runtime: RuntimeSpec, policies: list[FineTunePolicy], origin: dict[str, str]) -> None:
    """A deadline or TTL still unset after the defaults takes the tightest policy limit, so a job that
    asks for nothing stays within every limit (the TTL: the smaller of that and the built-in default)."""
    deadlines = [(p.spec.limits.max_active_deadline_seconds, p.name) for p in policies
                 if p.spec.limits.max_active_deadline_seconds is not None]
    if runtime.active_deadline_seconds is None and deadlines:
        runtime.active_deadline_seconds, origin["activeDeadlineSeconds"] = min(deadlines)
    ttls = [(p.spec.limits.max_ttl_seconds_after_finished, p.name) for p in policies
            if p.spec.limits.max_ttl_seconds_after_finished is not None]
    if runtime.ttl_seconds_after_finished is None and ttls:
        ttl, name = min(ttls)
        if ttl < DEFAULT_TTL_SECONDS:
            runtime.ttl_seconds_after_finished, origin["ttlSecondsAfterFinished"] = ttl, name


def gpus_per_job(job: FineTuneJob) -> int:
    """GPUs a job's training holds at once: concurrent trials x workers x GPUs per worker."""
    concurrent = min(job.spec.tuning.max_concurrent_trials, job.spec.tuning.num_trials)
    return concurrent * job.spec.resources.workers * job.spec.resources.gpus_per_worker


def _limit_violations(job: FineTuneJob, policy: FineTunePolicy) -> list[str]:
    limits = policy.spec.limits
    spec = job.spec
    by = f"set by FineTunePolicy {policy.name}"
    out: list[str] = []
    if limits.max_workers is not None and spec.resources.workers > limits.max_workers:
        out.append(f"spec.resources.workers: {spec.resources.workers} exceeds maxWorkers {limits.max_workers} {by}")
    if limits.max_cpus_per_worker is not None and spec.resources.cpus_per_worker > limits.max_cpus_per_worker:
        out.append(
            f"spec.resources.cpusPerWorker: {_num(spec.resources.cpus_per_worker)} exceeds "
            f"maxCpusPerWorker {_num(limits.max_cpus_per_worker)} {by}"
        )
    if limits.max_gpus_per_job is not None and gpus_per_job(job) > limits.max_gpus_per_job:
        concurrent = min(spec.tuning.max_concurrent_trials, spec.tuning.num_trials)
        out.append(
            f"spec.resources.gpusPerWorker: the job holds {gpus_per_job(job)} GPUs at once ({concurrent} concurrent "
            f"trials x {spec.resources.workers} workers x {spec.resources.gpus_per_worker} GPUs per worker), "
            f"which exceeds maxGpusPerJob {limits.max_gpus_per_job} {by}"
        )
    if limits.max_trials is not None and spec.tuning.num_trials > limits.max_trials:
        out.append(f"spec.tuning.numTrials: {spec.tuning.num_trials} exceeds maxTrials {limits.max_trials} {by}")
    if limits.max_concurrent_trials is not None and spec.tuning.max_concurrent_trials > limits.max_concurrent_trials:
        out.append(
            f"spec.tuning.maxConcurrentTrials: {spec.tuning.max_concurrent_trials} exceeds "
            f"maxConcurrentTrials {limits.max_concurrent_trials} {by}"
        )
    return out + _runtime_limit_violations(job, policy)


def _runtime_limit_violations(job: FineTuneJob, policy: FineTunePolicy) -> list[str]:
    """Deadline, TTL and queue as limits (after defaults and `_fill_from_limits`)."""
    limits, runtime = policy.spec.limits, job.spec.runtime
    by = f"set by FineTunePolicy {policy.name}"
    out: list[str] = []
    deadline = runtime.active_deadline_seconds
    if limits.max_active_deadline_seconds is not None and deadline is not None and deadline > limits.max_active_deadline_seconds:
        out.append(f"spec.runtime.activeDeadlineSeconds: {deadline} exceeds maxActiveDeadlineSeconds "
                   f"{limits.max_active_deadline_seconds} {by}")
    ttl = runtime.ttl_after_finished
    if limits.max_ttl_seconds_after_finished is not None and ttl > limits.max_ttl_seconds_after_finished:
        out.append(f"spec.runtime.ttlSecondsAfterFinished: {ttl} exceeds maxTtlSecondsAfterFinished "
                   f"{limits.max_ttl_seconds_after_finished} {by}")
    queues = policy.spec.allowed_queue_names
    queue = runtime.queue_name
    if queues and (queue is None or not any(fnmatch.fnmatchcase(queue, pattern) for pattern in queues)):
        asked = "none" if queue is None else repr(queue)
        out.append(f"spec.runtime.queueName: {asked} is not allowed by allowedQueueNames of FineTunePolicy {policy.name} "
                   f"(allowed: {', '.join(queues)}); name one of them")
    return out


def _source_violations(job: FineTuneJob, policy: FineTunePolicy) -> list[str]:
    spec = job.spec
    rules = policy.spec
    by_kind = {"model": ("allowedModelSources", rules.allowed_model_sources),
               "dataset": ("allowedDatasetSources", rules.allowed_dataset_sources)}
    checks: list[tuple[str, str | None, str, list[str]]] = [(path, value, *by_kind[kind]) for path, value, kind in spec.sources()]
    # An unset image runs the operator's own default image, which the cluster admin chose.
    checks.append(("spec.runtime.image", spec.runtime.image, "allowedImages", rules.allowed_images))
    out: list[str] = []
    for path, value, rule, patterns in checks:
        # finetunejob://NAME is a model the namespace trained itself (resolved in the same namespace only).
        if value is not None and referenced_name(value) is None and not source_allowed(value, patterns):
            out.append(
                f"{path}: {value!r} is not allowed by {rule} of FineTunePolicy {policy.name} "
                f"(allowed: {', '.join(patterns)})"
            )
    return out


def _kueue_violations(job: FineTuneJob, origin: dict[str, str]) -> list[str]:
    runtime = job.spec.runtime
    if runtime.queue_name is None or runtime.cluster is None:
        return []
    source = f" (default from FineTunePolicy {origin['queueName']})" if "queueName" in origin else ""
    return [
        f"spec.runtime.queueName: Kueue queue {runtime.queue_name!r}{source} cannot admit a job that runs on an "
        "existing Ray cluster (spec.runtime.cluster); remove one of them"
    ]


def admit(
    job: FineTuneJob,
    namespace_labels: dict[str, str],
    policies: list[FineTunePolicy],
    active_jobs: int,
) -> Admission:
    """Check a new FineTuneJob against every FineTunePolicy selecting its namespace.

    `namespace_labels`: the labels of the job's Namespace object. `policies`: all
    FineTunePolicies in the cluster (non-matching ones are ignored). `active_jobs`: unfinished
    FineTuneJobs already admitted in the namespace, this job not included. Defaults are applied
    before the checks, so a policy's default image must pass allowedImages too.
    """
    selected = matching_policies(namespace_labels, policies)
    defaulted, origin = apply_defaults(job, selected)
    violations: list[str] = []
    capacity: list[str] = []
    for policy in selected:
        violations += _limit_violations(defaulted, policy)
        violations += _source_violations(defaulted, policy)
        limit = policy.spec.limits.max_concurrent_jobs
        if limit is not None and active_jobs >= limit:
            namespace = defaulted.metadata.namespace or "(unknown)"
            capacity.append(
                f"metadata.namespace: {namespace} already has {active_jobs} unfinished FineTuneJobs, "
                f"the most maxConcurrentJobs {limit} set by FineTunePolicy {policy.name} allows"
            )
    violations += _kueue_violations(defaulted, origin)
    every = violations + capacity
    return Admission(
        allowed=not every,
        violations=every,
        job=defaulted,
        policies=[p.name for p in selected],
        retryable=bool(capacity) and not violations,
        origin=origin,
    )


def kueue_labels(job: FineTuneJob) -> dict[str, str]:
    """The labels that hand a RayJob to Kueue: the LocalQueue from spec.runtime.queueName."""
    queue = job.spec.runtime.queue_name
    return {} if queue is None else {KUEUE_QUEUE_LABEL: queue}  # "" never means "no queue" (the schema refuses it)


def apply_kueue(rayjob: dict[str, Any], job: FineTuneJob) -> dict[str, Any]:
    """A copy of a built RayJob made Kueue-managed when the job names a queue (else unchanged).

    Kueue's RayJob rules: the queue label on the RayJob, created suspended (Kueue unsuspends it
    on admission, so call this when creating the RayJob only, never to overwrite spec.suspend
    of an existing one), the cluster deleted when the job finishes, in-tree autoscaling off,
    at most 7 worker groups, and no existing cluster (clusterSelector).
    """
    labels = kueue_labels(job)
    if not labels:
        return rayjob
    spec = dict(rayjob.get("spec") or {})
    if spec.get("clusterSelector"):
        raise ValueError(
            "spec.runtime.queueName: Kueue cannot admit a RayJob that uses an existing cluster "
            "(clusterSelector); remove spec.runtime.cluster or spec.runtime.queueName"
        )
    cluster_spec = dict(spec.get("rayClusterSpec") or {})
    groups = cluster_spec.get("workerGroupSpecs") or []
    if len(groups) > KUEUE_MAX_WORKER_GROUPS:
        raise ValueError(
            f"Kueue admits at most {KUEUE_MAX_WORKER_GROUPS} worker groups per RayJob; this RayJob has {len(groups)}"
        )
    metadata = dict(rayjob.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    spec["suspend"] = True
    spec["shutdownAfterJobFinishes"] = True
    if cluster_spec:
        cluster_spec["enableInTreeAutoscaling"] = False
        spec["rayClusterSpec"] = cluster_spec
    return {**rayjob, "metadata": metadata, "spec": spec}
