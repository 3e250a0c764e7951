"""A tenant's FineTuneJob as the target of hostile-tenant node tests, and a pod of another tenant
that runs a Python script against it.

Shared by test_tenancy_ray_auth_kuberay.py (token authentication) and
test_tenancy_netpol_kuberay.py (an enforced NetworkPolicy): both start the victim's job, wait until
its Ray head runs the Ray job, act from another namespace, and follow the job to its end.
"""

from __future__ import annotations

import json
from typing import Any

from testbed.process import wait_until
from tests.kuberay.diagnose import waiting
from tests.kuberay.release import Release
from tests.kuberay.test_smoke_kuberay import smoke_job

NAME = "victim"
ENDED = ("Succeeded", "Failed", "Rejected")
HEAD_PODS = f"ray.io/node-type=head,graft.dev/finetunejob={NAME}"  # label selector of its Ray head pod


def start_victim_job(release: Release) -> str:
    """Apply the smoke job as `victim` in the release's tenant namespace (no serving) and return the
    pod IP of its Ray head once the RayJob has handed the Ray job to the dashboard."""
    doc = smoke_job()
    doc["metadata"]["name"] = NAME
    doc["spec"].pop("serving", None)
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))
    return str(wait_until(lambda: head_ip(release), timeout=900, interval=2,
                          what=waiting(release, f"the Ray head of {NAME} to run its job")))


def head_ip(release: Release) -> str | None:
    """The pod IP of the victim's Ray head once its RayJob has handed the Ray job to the dashboard."""
    rayjob = release.get("rayjob", NAME) or {}
    if (rayjob.get("status") or {}).get("jobDeploymentStatus") != "Running":
        return None
    heads = release.items("pods", "-l", HEAD_PODS)
    ips = [p["status"].get("podIP") for p in heads if p["status"].get("phase") == "Running"]
    return ips[0] if ips and ips[0] else None


def victim_finished(release: Release) -> dict[str, Any]:
    """The victim's FineTuneJob once it has reached a final phase."""

    def ended() -> dict[str, Any] | None:
        ftj = release.get("finetunejob", NAME) or {}
        return ftj if (ftj.get("status") or {}).get("phase") in ENDED else None

    ftj = wait_until(ended, timeout=1200, interval=3, what=waiting(release, f"FineTuneJob {NAME} to finish"))
    assert ftj is not None  # wait_until returns only a truthy value
    return ftj


def run_script_in_pod(release: Release, namespace: str, pod_name: str, script: str, args: list[str]) -> dict[str, Any]:
    """Run `python -c script *args` in a pod of `namespace` (the victim's Ray image: Python is
    there) and return the JSON object its last line of output holds."""
    image = next(c["image"] for p in release.items("pods", "-l", HEAD_PODS)
                 for c in p["spec"]["containers"])
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "attacker", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-c", script, *args],
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        }]},
    }
    release.kubectl("apply", "-f", "-", input=json.dumps(pod))

    def done() -> bool:
        got = release.get("pod", pod_name, namespace) or {}
        return (got.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    wait_until(done, timeout=300, interval=2, what=waiting(release, f"the pod {pod_name} to finish"))
    out = release.kubectl("logs", pod_name, "-n", namespace).stdout.strip().splitlines()
    return dict(json.loads(out[-1]))
