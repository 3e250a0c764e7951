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
from testbed.process import wait_until
from tests.kuberay.diagnose import waiting
from tests.kuberay.release import Release, installed
from tests.kuberay.test_smoke_kuberay import smoke_job

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.tenancy, pytest.mark.slow, pytest.mark.timeout(2400)]

NAME = "victim"
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


def head_ip(release: Release) -> str | None:
    """The pod IP of the victim's Ray head once its RayJob has handed the Ray job to the dashboard."""
    rayjob = release.get("rayjob", NAME) or {}
    if (rayjob.get("status") or {}).get("jobDeploymentStatus") != "Running":
        return None
    heads = release.items("pods", "-l", f"ray.io/node-type=head,graft.dev/finetunejob={NAME}")
    ips = [p["status"].get("podIP") for p in heads if p["status"].get("phase") == "Running"]
    return ips[0] if ips and ips[0] else None


def attack(release: Release, namespace: str, dashboard: str) -> dict[str, Any]:
    """Run ATTACK in a pod of `namespace` (the Ray image: Python is there) and return what it printed."""
    image = next(c["image"] for p in release.items("pods", "-l", f"ray.io/node-type=head,graft.dev/finetunejob={NAME}")
                 for c in p["spec"]["containers"])
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "submit-to-team-b", "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "attacker", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-c", ATTACK, dashboard],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        }]},
    }
    release.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def done() -> bool:
        got = release.get("pod", "submit-to-team-b", namespace) or {}
        return (got.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    wait_until(done, timeout=300, interval=2, what=waiting(release, "the attacker pod to finish"))
    out = release.kubectl("logs", "submit-to-team-b", "-n", namespace).stdout.strip().splitlines()
    return dict(json.loads(out[-1]))


@pytest.fixture(scope="module")
def outcome(release: Release, attacker_ns: str) -> dict[str, Any]:
    """The victim's job applied in the release's tenant namespace; the attack while its cluster runs;
    the job followed to its end."""
    doc = smoke_job()
    doc["metadata"]["name"] = NAME
    doc["spec"].pop("serving", None)
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))
    ip = wait_until(lambda: head_ip(release), timeout=900, interval=2,
                    what=waiting(release, f"the Ray head of {NAME} to run its job"))
    answers = attack(release, attacker_ns, f"http://{ip}:8265")

    def ended() -> dict[str, Any] | None:
        ftj = release.get("finetunejob", NAME) or {}
        return ftj if (ftj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Rejected") else None

    ftj = wait_until(ended, timeout=1200, interval=3, what=waiting(release, f"FineTuneJob {NAME} to finish"))
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
