"""The ModelEndpoint a FineTuneJob promotes into (created when missing; never owned by the job)."""

from __future__ import annotations

from typing import Any

from graft.api.endpoint import ServedModel
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.operator.names import endpoint_labels


def build_promoted_model(job: FineTuneJob, result: TrainingResult, version: int) -> dict[str, Any]:
    """`spec.model` of the endpoint after promoting `result` as `version`."""
    if not result.model_uri:
        raise ValueError(f"the result of FineTuneJob {job.metadata.name!r} has no modelUri to promote")
    return ServedModel(
        uri=result.model_uri,
        metric=result.metric,
        score=result.best_score,
        mode=result.mode,
        source_job=job.metadata.name,
        version=version,
        max_seq_length=job.spec.training.max_seq_length,
        trust_remote_code=job.spec.model.trust_remote_code,
        task=job.spec.task,
    ).to_wire()


def build_endpoint(job: FineTuneJob, result: TrainingResult, name: str) -> dict[str, Any]:
    """A new ModelEndpoint serving `result` as version 1 with the job's serving spec.

    Deliberately without ownerReferences: deleting the job must never take the endpoint down."""
    spec: dict[str, Any] = {
        "model": build_promoted_model(job, result, 1),
        "serving": job.spec.serving.to_wire(),
    }
    if job.spec.runtime.image:
        spec["image"] = job.spec.runtime.image
    if job.spec.runtime.cluster is not None:  # serve where it trained: the same shared Ray cluster
        spec["cluster"] = job.spec.runtime.cluster.to_wire()
    runtime = job.spec.runtime.to_wire()  # the credentials that read the job's storage read the model too
    for key in ("secretEnv", "envFromSecrets"):
        if runtime.get(key):
            spec[key] = runtime[key]
    return {
        "apiVersion": job.api_version,
        "kind": "ModelEndpoint",
        "metadata": {"name": name, "namespace": job.metadata.namespace, "labels": endpoint_labels(name)},
        "spec": spec,
    }
