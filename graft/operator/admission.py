"""Admission: may this FineTuneJob or ModelEndpoint start work now? Pure; no kopf, no I/O.

The reconcile loop calls `admit_job` on every action that starts work (create the RayJob, resume
from suspend, recreate a missing RayJob, submit to a shared cluster) and `admit_endpoint` before
it creates or changes a RayService or Serve application, always with the current policies. The
caller reads the namespace labels, lists the policies and counts the namespace's active jobs.

On top of the FineTunePolicy limits (`graft.operator.policy.admit`) this enforces the tenant
boundary (docs/tenancy.md): `requirePolicy`, shared-cluster addresses, environment keys, remote
code, storage and source paths, Secret references, and the serving limits of endpoints.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from graft.api import locations
from graft.api.endpoint import ModelEndpoint
from graft.api.policy import FineTunePolicy, source_allowed
from graft.api.safety import (
    cluster_host,
    credential_env_problem,
    env_key_allowed,
    in_namespace_host,
    reserved_env_problem,
)
from graft.api.spec import ClusterRef, FineTuneJob, ServingSpec
from graft.operator.policy import Admission, admit, matching_policies
from graft.operator.settings import OperatorSettings
from graft.operator.unreadable import UnreadablePolicy, unreadable_violations


@dataclass(frozen=True)
class AdmissionContext:
    """What admission needs to know besides the object: namespace labels, every FineTunePolicy in
    the cluster (parsed, and those that do not parse), the namespace's unfinished admitted jobs (this
    one excluded) and the settings."""

    namespace_labels: dict[str, str]
    policies: list[FineTunePolicy]
    active_jobs: int = 0
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    unreadable: list[UnreadablePolicy] = field(default_factory=list)  # policies that failed to parse: fail closed


@dataclass(frozen=True)
class EndpointAdmission:
    allowed: bool
    violations: list[str]
    endpoint: ModelEndpoint
    policies: list[str] = field(default_factory=list)


def _by(policy: FineTunePolicy) -> str:
    return f"FineTunePolicy {policy.name}"


def require_policy_violations(namespace: str, selected: list[FineTunePolicy], settings: OperatorSettings) -> list[str]:
    if settings.require_policy and not selected:
        return [
            f"metadata.namespace: no FineTunePolicy selects namespace {namespace} and this operator runs only "
            "in namespaces a policy selects (requirePolicy); ask a cluster administrator for a FineTunePolicy"
        ]
    return []


def cluster_violations(
    path: str, cluster: ClusterRef | None, namespace: str, selected: list[FineTunePolicy], settings: OperatorSettings
) -> list[str]:
    """A shared cluster address must be a Service in the object's own namespace, one the operator
    allows everywhere (--allow-cluster-address), or one allowed by allowedClusterAddresses of every
    selecting policy that lists some (at least one must)."""
    if cluster is None or cluster.address is None:
        return []  # cluster.name is a RayCluster in the object's own namespace
    host, port = cluster_host(cluster.address)
    if in_namespace_host(host, namespace):
        return []
    scheme = "https" if cluster.address.lower().startswith("https://") else "http"
    url = f"{scheme}://{host}" + (f":{port}" if port else "")
    if settings.allowed_cluster_addresses and source_allowed(url, settings.allowed_cluster_addresses):
        return []
    listing = [p for p in selected if p.spec.allowed_cluster_addresses]
    if not listing:
        return [
            f"{path}.address: {cluster.address!r} is not a Service in namespace {namespace}; only addresses "
            f"SVC.{namespace}[.svc[.cluster.local]] are allowed unless a FineTunePolicy lists it in allowedClusterAddresses "
            "(or the operator in --allow-cluster-address)"
        ]
    return [
        f"{path}.address: {cluster.address!r} is not allowed by allowedClusterAddresses of {_by(p)} "
        f"(allowed: {', '.join(p.spec.allowed_cluster_addresses)})"
        for p in listing
        if not source_allowed(url, p.spec.allowed_cluster_addresses)
    ]


def _env_key_violations(
    keys: list[tuple[str, str, bool]], operator_keys: Collection[str], flag: str, selected: list[FineTunePolicy],
) -> list[str]:
    """Environment keys a tenant sets, as (field, key, from a Secret): an allowlist. A key is allowed when
    the default list has it (graft.api.safety) or every selecting policy's allowedEnvKeys matches it,
    compared case-insensitively; never a reserved key or one the operator sets (`flag`), whatever a
    policy lists."""
    own = {key.upper() for key in operator_keys}
    out: list[str] = []
    for path, key, from_secret in keys:
        if problem := reserved_env_problem(key):
            out.append(f"{path}: {problem}")
        elif key.upper() in own:
            out.append(f"{path}: {key} is set by the operator ({flag}) and cannot be overridden; remove it")
        elif env_key_allowed(key, [], from_secret=from_secret):
            continue
        elif not selected:
            out.append(f"{path}: {key} is not in the default environment allowlist and no FineTunePolicy selects "
                       "this namespace; remove it, or ask a cluster administrator to list it in a policy's allowedEnvKeys")
        else:
            refusing = [p for p in selected if not env_key_allowed(key, p.spec.allowed_env_keys, from_secret=from_secret)]
            out += [f"{path}: {key} is not allowed by allowedEnvKeys of {_by(p)} (allowed: "
                    f"{', '.join(['the defaults', *p.spec.allowed_env_keys])}); remove it, or ask a cluster "
                    "administrator to add it to allowedEnvKeys" for p in refusing]
    return out


def env_violations(job: FineTuneJob, selected: list[FineTunePolicy], settings: OperatorSettings) -> list[str]:
    runtime = job.spec.runtime
    credentials = [f"spec.runtime.env: {problem}" for key in runtime.env if (problem := credential_env_problem(key))]
    keys = [("spec.runtime.env", key, False) for key in runtime.env if not credential_env_problem(key)]
    keys += [("spec.runtime.secretEnv", e.name, True) for e in runtime.secret_env]
    return credentials + _env_key_violations(keys, settings.job_env, "--job-env", selected)


def remote_code_violations(path: str, trust_remote_code: bool, namespace: str, selected: list[FineTunePolicy]) -> list[str]:
    """Remote code (a job's or endpoint's model.trustRemoteCode) runs only where every selecting policy allows it."""
    if not trust_remote_code:
        return []
    refusing = [p.name for p in selected if not p.spec.allow_trust_remote_code]
    if selected and not refusing:
        return []
    why = f"FineTunePolicy {', '.join(refusing)} does not allow it" if refusing else f"no FineTunePolicy selecting {namespace} allows it"
    return [
        f"{path}: running the model's own code is not allowed ({why}); "
        "set it to false, or ask a cluster administrator for allowTrustRemoteCode: true"
    ]


def storage_roots(settings: OperatorSettings) -> list[str]:
    """The operator's own storage roots, partitioned per namespace (`<root>/<namespace>/...`)."""
    roots = [settings.result_storage] if settings.result_storage else []
    if settings.storage_pvc:
        roots.append(settings.storage_mount_path)
    return roots


def partition_violations(path: str, value: str | None, namespace: str, settings: OperatorSettings, *, root_ok: bool) -> list[str]:
    """A value under an operator storage root must lie in the namespace's own part `<root>/<namespace>/`
    (`root_ok`: the root itself is fine too, for a storage setting the job narrows itself). Every
    spelling is judged by its canonical form (`graft.api.locations`: `file://`, `//`, percent-encoding)."""
    if value is None:
        return []
    try:
        where = locations.parse(value)
    except locations.LocationError as exc:
        return [f"{path}: {exc}"]
    for root in storage_roots(settings):
        if not locations.under(where, root):
            continue
        part = locations.part_below(where, root)
        if part == namespace or (root_ok and part is None):
            return []
        own = f"{locations.canonical(root).rstrip('/')}/{namespace}"
        return [f"{path}: {value!r} is in another namespace's part of the shared storage {root}; use {own}/..."]
    return []


def path_violations(job: FineTuneJob, namespace: str, selected: list[FineTunePolicy], settings: OperatorSettings) -> list[str]:
    spec = job.spec
    out: list[str] = []
    for path, value, _ in spec.sources():
        out += partition_violations(path, value, namespace, settings, root_ok=False)
    storage = spec.checkpoints.storage
    out += partition_violations("spec.checkpoints.storage", storage, namespace, settings, root_ok=True)
    if storage is not None:
        for policy in selected:
            allowed = policy.spec.allowed_checkpoint_storage
            if not source_allowed(storage, allowed):
                out.append(
                    f"spec.checkpoints.storage: {storage!r} is not allowed by allowedCheckpointStorage of "
                    f"{_by(policy)} (allowed: {', '.join(allowed)})"
                )
    return out


def secret_violations(job: FineTuneJob) -> list[str]:
    runtime = job.spec.runtime
    if runtime.cluster is not None and runtime.secret_env:
        return [
            "spec.runtime.secretEnv: Secret references reach the Ray pods of the job's own RayJob only; a shared "
            "cluster's pods must already hold the credentials. Remove spec.runtime.cluster or the Secret references"
        ]
    return []


def endpoint_secret_violations(endpoint: ModelEndpoint, selected: list[FineTunePolicy], settings: OperatorSettings) -> list[str]:
    """Secret references of a ModelEndpoint: its own RayService only, and every name allowlisted as
    for jobs (never reserved, never an operator-set --serve-env key)."""
    spec = endpoint.spec
    if not spec.secret_env:
        return []
    if spec.cluster is not None:
        return ["spec.secretEnv: Secret references reach the pods of the endpoint's own RayService only; a shared "
                "cluster's pods must already hold the credentials. Remove spec.cluster or the Secret references"]
    keys = [("spec.secretEnv", e.name, True) for e in spec.secret_env]
    return _env_key_violations(keys, settings.serve_env, "--serve-env", selected)


def serving_violations(prefix: str, serving: ServingSpec, selected: list[FineTunePolicy]) -> list[str]:
    out: list[str] = []
    for policy in selected:
        limits = policy.spec.limits
        if limits.max_serving_replicas is not None and serving.max_replicas > limits.max_serving_replicas:
            out.append(f"{prefix}.maxReplicas: {serving.max_replicas} exceeds maxServingReplicas "
                       f"{limits.max_serving_replicas} set by {_by(policy)}")
        gpus = serving.max_replicas * serving.resources.gpus
        if limits.max_gpus_per_endpoint is not None and gpus > limits.max_gpus_per_endpoint:
            out.append(f"{prefix}.resources.gpus: {serving.max_replicas} replicas x {serving.resources.gpus:g} GPUs = "
                       f"{gpus:g} exceeds maxGpusPerEndpoint {limits.max_gpus_per_endpoint:g} set by {_by(policy)}")
        cpus = limits.max_cpus_per_serving_replica
        if cpus is not None and serving.resources.cpus > cpus:
            out.append(f"{prefix}.resources.cpus: {serving.resources.cpus:g} exceeds maxCpusPerServingReplica "
                       f"{cpus:g} set by {_by(policy)}")
    return out


def admit_job(job: FineTuneJob, ctx: AdmissionContext) -> Admission:
    """`graft.operator.policy.admit` (limits, sources, images, defaults, maxConcurrentJobs) plus the
    tenant boundary and unreadable policies. Run the returned `job` (policy defaults filled in) when
    `allowed`."""
    base = admit(job, ctx.namespace_labels, ctx.policies, ctx.active_jobs)
    selected = matching_policies(ctx.namespace_labels, ctx.policies)
    namespace = job.metadata.namespace or ""
    spec = base.job.spec
    broken = unreadable_violations(namespace, ctx.namespace_labels, ctx.unreadable)
    boundary = (
        broken  # an unreadable policy that governs the namespace selects it (requirePolicy is met, closed)
        + (require_policy_violations(namespace, selected, ctx.settings) if not broken else [])
        + cluster_violations("spec.runtime.cluster", spec.runtime.cluster, namespace, selected, ctx.settings)
        + env_violations(base.job, selected, ctx.settings)
        + remote_code_violations("spec.model.trustRemoteCode", spec.model.trust_remote_code, namespace, selected)
        + path_violations(base.job, namespace, selected, ctx.settings)
        + secret_violations(base.job)
        + (serving_violations("spec.serving", spec.serving, selected) if spec.serving.enabled else [])
    )
    if not boundary:
        return base
    # Only unreadable policies (and capacity) in the way: the job waits until the policy is fixed.
    waits = len(boundary) == len(broken) and (base.allowed or base.retryable)
    return replace(base, allowed=False, violations=boundary + base.violations, retryable=waits)


def admit_endpoint(endpoint: ModelEndpoint, ctx: AdmissionContext) -> EndpointAdmission:
    """The same boundary for a ModelEndpoint: requirePolicy, allowedImages, serving limits, the
    cluster address, Secret key names, remote code (allowTrustRemoteCode, also for a model a job
    promotes in and on a shared Serve cluster), and a model that is the tenant's own or allowed by
    the policies."""
    selected = matching_policies(ctx.namespace_labels, ctx.policies)
    namespace = endpoint.metadata.namespace or ""
    spec = endpoint.spec
    out = unreadable_violations(namespace, ctx.namespace_labels, ctx.unreadable)
    out += require_policy_violations(namespace, selected, ctx.settings) if not out else []
    out += cluster_violations("spec.cluster", spec.cluster, namespace, selected, ctx.settings)
    out += serving_violations("spec.serving", spec.serving, selected)
    out += endpoint_secret_violations(endpoint, selected, ctx.settings)
    out += remote_code_violations("spec.model.trustRemoteCode", spec.model.trust_remote_code, namespace, selected)
    uri = spec.model.uri
    partition = partition_violations("spec.model.uri", uri, namespace, ctx.settings, root_ok=False)
    out += partition
    own = not partition and any(locations.under(uri, root) for root in storage_roots(ctx.settings))
    for policy in selected:
        rules = policy.spec
        if spec.image is not None and not source_allowed(spec.image, rules.allowed_images):
            out.append(f"spec.image: {spec.image!r} is not allowed by allowedImages of {_by(policy)} "
                       f"(allowed: {', '.join(rules.allowed_images)})")
        patterns = rules.allowed_model_sources + rules.allowed_checkpoint_storage
        if not own and not partition and patterns and not source_allowed(uri, patterns):
            out.append(f"spec.model.uri: {uri!r} is not allowed by allowedModelSources or allowedCheckpointStorage "
                       f"of {_by(policy)} (allowed: {', '.join(patterns)})")
    return EndpointAdmission(allowed=not out, violations=out, endpoint=endpoint, policies=[p.name for p in selected])
