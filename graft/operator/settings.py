"""Operator settings: everything a builder needs that is not in the FineTuneJob/ModelEndpoint spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graft.api.quantity import QUANTITY_PATTERN

DEFAULT_RAY_IMAGE = "ghcr.io/graft-dev/graft-ray:0.1.0-ray2.60.0-py311"
RAY_VERSION = "2.60.0"


class OperatorSettings(BaseModel):
    """Cluster-wide defaults, set by `graft operator` flags (and the chart's values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ray_image: str = Field(default=DEFAULT_RAY_IMAGE, min_length=1, description="Ray image with graft installed.")
    ray_version: str = Field(default=RAY_VERSION)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    head_cpu: str = Field(default="1", pattern=QUANTITY_PATTERN, description="CPU of the Ray head pod.")
    head_cpu_limit: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description=(
        "CPU limit of the Ray head container (default: head_cpu). Heads run Ray with no logical CPUs, so "
        "the limit only caps bursts: starting the GCS, the dashboard and the job's driver."))
    head_memory: str = Field(default="4Gi", pattern=QUANTITY_PATTERN, description=(
        "Ray head memory: the job's driver plus a trial driver and Train controller per concurrent trial."))
    worker_memory: str = Field(default="4Gi", pattern=QUANTITY_PATTERN, description="Used when a spec sets no memory.")
    serve_memory: str = Field(default="2Gi", pattern=QUANTITY_PATTERN, description="Serve worker memory when a spec sets none.")
    autoscaler_cpu: str = Field(default="200m", pattern=QUANTITY_PATTERN, description="CPU of KubeRay's autoscaler sidecar (RayService heads).")
    autoscaler_memory: str = Field(default="512Mi", pattern=QUANTITY_PATTERN)
    submission_mode: Literal["K8sJobMode", "HTTPMode", "SidecarMode"] = Field(
        default="K8sJobMode", description="RayJob spec.submissionMode: how KubeRay submits the Ray job.")
    driver_resource: str | None = Field(
        default="graft_trial_driver",  # graft.jobs.tune.TRIAL_DRIVER_RESOURCE (not imported: it pulls in Ray)
        description="Custom Ray resource the head advertises (maxConcurrentTrials of it) for Tune trial drivers.",
    )
    result_storage: str | None = Field(
        default=None, description="Where jobs without spec.checkpoints.storage write result.json (shared path or URI)."
    )
    storage_pvc: str | None = Field(default=None, description="PVC mounted into every Ray pod at storage_mount_path.")
    storage_mount_path: str = "/mnt/graft"
    storage_group: int = Field(default=2000, ge=1, description=(
        "GID the Ray pods (supplementalGroups) and the operator share on the storage PVC: directories there are "
        "setgid 2770 of it, never world-writable (docs/install.md#storage)."))
    service_account: str | None = Field(default=None, description="ServiceAccount of the Ray pods.")
    ray_ingress_from: list[dict[str, Any]] | None = Field(default=None, description=(
        "NetworkPolicy peers (the Graft and KubeRay operators) admitted to every Ray cluster's pods besides the "
        "cluster's own (graft.operator.builders.netpol); None: no NetworkPolicy is created."))
    ray_auth_key_file: str | None = Field(default=None, description=(
        "File with the operator's key (at least 32 bytes) from which each Ray cluster's token is derived "
        "(graft.operator.rayauth); unset: a random key per operator process."))
    job_env: dict[str, str] = Field(
        default_factory=lambda: {"RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"},
        description="Environment of every training job (spec.runtime.env overrides it).",
    )
    serve_env: dict[str, str] = Field(default_factory=lambda: {"TOKENIZERS_PARALLELISM": "false"})
    serve_port: int = Field(default=8000, ge=1, le=65535)
    history_limit: int = Field(default=20, ge=1, le=20, description="Promotions kept in ModelEndpoint status.")
    resync_seconds: float = Field(default=30.0, gt=0, description="Safety net: how often every unfinished object is reconciled.")
    shared_dashboard_url: str = Field(
        default="http://{name}-head-svc.{namespace}.svc:8265",
        description="Dashboard of a shared RayCluster named by spec.runtime.cluster.name ({name}, {namespace} filled in).",
    )
    shared_poll_seconds: float = Field(default=5.0, gt=0, description="How often jobs on a shared Ray cluster are polled.")
    # Tenancy (graft.operator.admission): no FineTunePolicy selecting a namespace -> nothing runs there.
    # The one default of `--require-policy` (the chart's tenancy.requirePolicy passes its own value explicitly).
    require_policy: bool = Field(default=True, description=(
        "Refuse jobs and endpoints in namespaces no FineTunePolicy selects (secure default; a single-team "
        "cluster turns it off with --no-require-policy)."))
    sweep_seconds: float = Field(default=60.0, gt=0, description="How often shared clusters are swept for orphaned Ray jobs.")
    allowed_cluster_addresses: list[str] = Field(
        default_factory=list,
        description="Shared Ray cluster addresses (prefixes or globs) every namespace may use, besides its own Services.",
    )
    progress_seconds: float = Field(default=15.0, gt=0, description="How often a running job's progress is read into status (at most).")
    workers: int = Field(default=8, ge=1, le=256, description="Reconcile worker threads.")
