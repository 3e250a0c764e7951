"""Hostile tenant on the real node (issue 21, finding 5): a pod in one namespace tries to submit a Ray
job to the Ray head of another namespace's FineTuneJob, and is refused by Ray token authentication
(KubeRay v1.6.0 `authOptions`, the token in a Secret the operator created), while the owner's job,
submitted by KubeRay with the token, runs to the end.

The attacker reaches the head's dashboard directly (the pod IP: no NetworkPolicy is enforced on the
test node's bridge CNI, so reachability is not what refuses it). It posts a job without a token and
with a guessed one: Ray answers 401 and 403. Before token authentication Ray answered 200 and ran
the attacker's entrypoint in team-b's pods, with team-b's Secrets in their environment.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from tests.kuberay.release import Release, installed
from tests.kuberay.victim import NAME, run_script_in_pod, start_victim_job, victim_finished

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.tenancy, pytest.mark.slow, pytest.mark.timeout(2400)]

# Run by the attacker pod: POST a job to the dashboard at argv[1] without a token and with a guessed
# one; prints {"none": status, "guess": status} (a string when the head cannot be reached at all).
ATTACK = """
import json, sys, urllib.error, urllib.request
url = sys.argv[1] + "/api/jobs/"
def post(headers):
    body = json.dumps({"entrypoint": "touch /tmp/pwned"}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"unreachable: {exc}"
print(json.dumps({"none": post({}), "guess": post({"Authorization": "Bearer guess"})}))
"""


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "ray-auth") as rel:
        yield rel


@pytest.fixture(scope="module")
def attacker_ns(control_plane: ControlPlane, release: Release) -> Iterator[str]:
    ns = control_plane.create_namespace(prefix="team-a")
    try:
        yield ns
    finally:
        control_plane.delete_namespace(ns, wait=True, timeout=120)


@pytest.fixture(scope="module")
def outcome(release: Release, attacker_ns: str) -> dict[str, Any]:
    """The victim's job applied in the release's tenant namespace; the attack while its cluster runs;
    the job followed to its end."""
    ip = start_victim_job(release)
    answers = run_script_in_pod(release, attacker_ns, "submit-to-team-b", ATTACK, [f"http://{ip}:8265"])
    ftj = victim_finished(release)
    return {"answers": answers, "ftj": ftj, "policy": release.get("networkpolicy", f"{NAME}-ray-ingress")}


def test_a_pod_of_another_tenant_cannot_submit_a_job_to_the_ray_head(outcome: dict[str, Any]) -> None:
    assert outcome["answers"] == {"none": 401, "guess": 403}, outcome["answers"]


def test_the_owners_job_runs_to_the_end_with_the_token(outcome: dict[str, Any]) -> None:
    st = outcome["ftj"]["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)[-3000:]


def test_the_cluster_has_its_network_policy_for_a_cni_that_enforces_it(outcome: dict[str, Any]) -> None:
    """Created by the operator with the chart's peers; the test node's bridge CNI does not enforce it."""
    policy = outcome["policy"]
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": {"graft.dev/finetunejob": NAME}}
    assert policy["metadata"]["ownerReferences"][0]["uid"] == outcome["ftj"]["metadata"]["uid"]
