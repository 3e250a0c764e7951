"""FineTunePolicy: cluster-scoped tenant guardrails (limits, allowed sources, runtime defaults).

A policy applies to the FineTuneJobs in every namespace its `namespaceSelector` matches (an
absent or empty selector matches every namespace). All matching policies apply at once: each
limit must hold for each of them, and a job's sources and image must be allowed by each policy
that restricts them. The operator evaluates them with `graft.operator.policy.admit` when a
FineTuneJob is created; see docs/policy.md.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, model_validator

from graft.api.base import GROUP_VERSION, ApiModel
from graft.api.crd import CrdInfo, register
from graft.api.safety import normalise, traversal_problem, under
from graft.api.status import Condition

# A DNS-1123 subdomain: cluster-scoped object names may contain dots.
SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_GLOB_CHARS = frozenset("*?[")


class LabelSelectorRequirement(ApiModel):
    """One `matchExpressions` entry, with the semantics of a Kubernetes LabelSelector."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                        " : (!has(self.values) || size(self.values) == 0)"
                    ),
                    "message": "In and NotIn need values; Exists and DoesNotExist take none",
                }
            ]
        }
    }

    key: str = Field(min_length=1, max_length=317, description="Namespace label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(
        default_factory=list, description="Values for In and NotIn; empty for Exists and DoesNotExist."
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


class LabelSelector(ApiModel):
    """A Kubernetes LabelSelector over namespace labels; empty matches every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(req.matches(labels) for req in self.match_expressions)


class PolicyLimits(ApiModel):
    """Upper bounds for each FineTuneJob; an unset limit does not constrain."""

    max_workers: int | None = Field(default=None, ge=1, description="Most Ray Train workers per trial (spec.resources.workers).")
    max_gpus_per_job: int | None = Field(
        default=None,
        ge=0,
        description="Most GPUs a job holds at once: concurrent trials x workers x gpusPerWorker.",
    )
    max_cpus_per_worker: float | None = Field(default=None, gt=0, description="Most CPUs per worker (spec.resources.cpusPerWorker).")
    max_trials: int | None = Field(default=None, ge=1, description="Most tuning trials (spec.tuning.numTrials).")
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, description="Most trials running at once (spec.tuning.maxConcurrentTrials)."
    )
    max_concurrent_jobs: int | None = Field(
        default=None, ge=0, description="Most unfinished FineTuneJobs per namespace, this one included."
    )
    max_serving_replicas: int | None = Field(
        default=None, ge=0, description="Most replicas of an endpoint (serving.maxReplicas of a ModelEndpoint or FineTuneJob)."
    )
    max_gpus_per_endpoint: float | None = Field(
        default=None, ge=0, description="Most GPUs an endpoint holds at full scale: maxReplicas x serving.resources.gpus."
    )
    max_cpus_per_serving_replica: float | None = Field(
        default=None, gt=0, description="Most CPUs per serving replica (serving.resources.cpus)."
    )
    max_active_deadline_seconds: int | None = Field(
        default=None, ge=1,
        description="Longest spec.runtime.activeDeadlineSeconds a job may ask for; a job that sets none gets this one.",
    )
    max_ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0,
        description="Longest spec.runtime.ttlSecondsAfterFinished a job may ask for; a job that sets none gets the "
        "smaller of this and the default.",
    )


class RuntimeDefaults(ApiModel):
    """Values filled into spec.runtime of a job that leaves them unset."""

    image: str | None = Field(default=None, description="Ray image with graft installed.")
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Applied only where the job object has no ttlSecondsAfterFinished (see docs/policy.md).",
    )
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    queue_name: str | None = Field(default=None, min_length=1, description="Kueue LocalQueue in the job's namespace.")


def source_allowed(value: str, patterns: list[str]) -> bool:
    """True when `value` matches one pattern: a glob (`*`, `?`, `[...]`, where `*` also matches
    `/`) or otherwise a prefix on a path boundary (`s3://data` covers `s3://data/x`, not
    `s3://database`; `package://` covers every package). The value is normalised first and one
    with a `..` segment is never allowed. An empty pattern list allows everything."""
    if not patterns:
        return True
    if traversal_problem(value):
        return False
    plain = normalise(value)
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            if fnmatch.fnmatchcase(plain, pattern):
                return True
        elif under(plain, pattern):
            return True
    return False


class FineTunePolicySpec(ApiModel):
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose FineTuneJobs this policy governs; absent or empty: all."
    )
    limits: PolicyLimits = Field(default_factory=PolicyLimits)
    allowed_model_sources: list[str] = Field(
        default_factory=list,
        description="Prefixes or globs spec.model.source must match; empty allows any source.",
    )
    allowed_dataset_sources: list[str] = Field(
        default_factory=list,
        description="Prefixes or globs spec.dataset.source (and its validation source) must match; empty allows any.",
    )
    allowed_images: list[str] = Field(
        default_factory=list,
        description="Prefixes or globs spec.runtime.image must match; empty allows any. Unset images use the operator's default.",
    )
    allowed_checkpoint_storage: list[str] = Field(
        default_factory=list,
        description="Prefixes or globs spec.checkpoints.storage must match; empty allows any.",
    )
    allowed_cluster_addresses: list[str] = Field(
        default_factory=list,
        description="Prefixes or globs (http://HOST:PORT) a shared Ray cluster address must match. Without any, "
        "only Services in the job's own namespace (SVC.NAMESPACE[.svc[.cluster.local]]) are allowed.",
    )
    allowed_env_keys: list[str] = Field(
        default_factory=list,
        description="Globs of environment keys (spec.runtime.env, secretEnv of jobs and endpoints) allowed besides the "
        "default allowlist, compared case-insensitively; a key outside the defaults needs every selecting policy to "
        "list it. Reserved keys and the operator's own (--job-env, --serve-env) are never allowed.",
    )
    allowed_queue_names: list[str] = Field(
        default_factory=list,
        description="Kueue LocalQueues (names or globs) jobs must run through: a job naming another queue, or none, "
        "is Rejected. Empty: any queue, or none.",
    )
    allow_trust_remote_code: bool = Field(
        default=False,
        description="Let jobs set spec.model.trustRemoteCode (custom model code from the hub). Remote code runs "
        "only where every selecting policy allows it; the same holds for a ModelEndpoint's model.trustRemoteCode.",
    )
    runtime_defaults: RuntimeDefaults = Field(default_factory=RuntimeDefaults)

    def selects(self, namespace_labels: dict[str, str]) -> bool:
        return self.namespace_selector is None or self.namespace_selector.matches(namespace_labels)


class FineTunePolicyStatus(ApiModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class PolicyMeta(ApiModel):
    """The part of a cluster-scoped object's metadata Graft reads."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str = Field(pattern=SUBDOMAIN_PATTERN, max_length=253)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FineTunePolicy(ApiModel):
    api_version: Literal["graft.dev/v1alpha1"] = Field(default=GROUP_VERSION)
    kind: Literal["FineTunePolicy"] = Field(default="FineTunePolicy")
    metadata: PolicyMeta
    spec: FineTunePolicySpec = Field(default_factory=FineTunePolicySpec)
    status: FineTunePolicyStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


FINETUNEPOLICY = CrdInfo(
    kind="FineTunePolicy",
    plural="finetunepolicies",
    singular="finetunepolicy",
    short_names=["ftp"],
    spec_model=FineTunePolicySpec,
    status_model=FineTunePolicyStatus,
    scope="Cluster",
    categories=["graft"],
    spec_required=False,
    printer_columns=[
        {"name": "Max Workers", "type": "integer", "jsonPath": ".spec.limits.maxWorkers"},
        {"name": "Max GPUs", "type": "integer", "jsonPath": ".spec.limits.maxGpusPerJob"},
        {"name": "Max Jobs", "type": "integer", "jsonPath": ".spec.limits.maxConcurrentJobs"},
        {"name": "Queue", "type": "string", "jsonPath": ".spec.runtimeDefaults.queueName"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

register(FINETUNEPOLICY)
