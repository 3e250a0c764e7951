"""The ModelEndpoint a FineTuneJob promotes into (created when missing; never owned by the job)."""

from __future__ import annotations

import json
from typing import Any

from graft.api.endpoint import ServedModel
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.operator.names import endpoint_labels

# The promotions an endpoint received, newest last: [{"uid", "job", "version"}], written in the same
# update as the model it promoted, so a promotion interrupted before the job's status recorded it
# (an operator crash) is recognised on the next try and never applied twice.
PROMOTIONS_ANNOTATION = "graft.dev/promotions"
PROMOTIONS_KEPT = 20


def promotions(endpoint: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The endpoint's promotion ledger (empty when it has none or it is not a JSON list)."""
    raw = (((endpoint or {}).get("metadata") or {}).get("annotations") or {}).get(PROMOTIONS_ANNOTATION)
    try:
        entries = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def with_promotion(ledger: list[dict[str, Any]], job: FineTuneJob, version: int) -> dict[str, str]:
    """The annotations that add `job`'s promotion as `version` to `ledger`."""
    entry = {"uid": job.metadata.uid_or_empty(), "job": job.metadata.name, "version": version}
    return {PROMOTIONS_ANNOTATION: json.dumps([*ledger, entry][-PROMOTIONS_KEPT:], separators=(",", ":"))}


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
    if runtime.get("secretEnv"):
        spec["secretEnv"] = runtime["secretEnv"]
    return {
        "apiVersion": job.api_version,
        "kind": "ModelEndpoint",
        "metadata": {"name": name, "namespace": job.metadata.namespace, "labels": endpoint_labels(name),
                     "annotations": with_promotion([], job, 1)},
        "spec": spec,
    }
