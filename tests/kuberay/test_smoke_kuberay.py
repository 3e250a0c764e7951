"""The real-node smoke of the fast tier (`make test`): the whole KubeRay path once, as small as it runs.

`helm install` the chart (the operator as a Pod from the image of scripts/images.sh), `kubectl apply`
a FineTuneJob cut from examples/finetune-kubernetes.yaml to one worker, one trial and a few steps,
KubeRay's pods train it, the ModelEndpoint's RayService answers /predict through its Serve Service,
and deleting both objects leaves no pod, Service or Ray object behind. The full flagship (ASHA over
two trials on two workers, promotion, autoscaling, failures, a lost worker pod) runs in
`make test-all`: tests/kuberay/test_flagship_kuberay.py.

The tests run in order on one job (module fixtures); each asserts one stage.
"""

from __future__ import annotations

import json
import stat
import time
from typing import Any, Iterator

import pytest
import yaml

from graft.jobs.deepspeed_config import cpu_bf16_is_fast
from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.kuberay.diagnose import waiting
from tests.kuberay.endpoint import answering_url, predict
from tests.kuberay.release import REPO, Release, installed, leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.timeout(2400)]

EXAMPLE = yaml.safe_load((REPO / "examples" / "finetune-kubernetes.yaml").read_text())
NAME = ENDPOINT = "smoke"
TTL_SECONDS = 45  # long enough to look at runs/ after the job ends, then the operator deletes it


def smoke_job() -> dict[str, Any]:
    """The Kubernetes example on one worker, one trial of one epoch of four steps, serving as `smoke`."""
    doc = json.loads(json.dumps(EXAMPLE))
    doc["metadata"]["name"] = NAME
    spec = doc["spec"]
    spec["training"].update({"epochs": 1, "maxStepsPerEpoch": 4, "precision": "auto"})
    spec["resources"]["workers"] = 1
    spec["tuning"] = {"metric": "eval_accuracy", "numTrials": 1}
    spec["serving"] = {**spec["serving"], "endpoint": ENDPOINT, "minReplicas": 1, "maxReplicas": 1}
    spec["runtime"] = {**spec.get("runtime", {}), "ttlSecondsAfterFinished": TTL_SECONDS}
    return doc


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "smoke") as rel:
        yield rel


@pytest.fixture(scope="module")
def run(release: Release) -> dict[str, Any]:
    """Apply the job and follow it to its end; what was seen on the way."""
    seen: dict[str, Any] = {"pods": set()}
    t0 = time.monotonic()
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(smoke_job()))

    def ended() -> dict[str, Any] | None:
        for pod in release.items("pods", "-l", "ray.io/is-ray-node=yes"):
            if pod["status"].get("phase") == "Running":
                seen["pods"].add(pod["metadata"]["labels"].get("ray.io/node-type"))
        ftj = release.get("finetunejob", NAME) or {}
        return ftj if (ftj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Rejected") else None

    seen["ftj"] = wait_until(ended, timeout=1200, interval=3, what=waiting(release, f"FineTuneJob {NAME} to finish"))
    release.timings["apply -> finished"] = time.monotonic() - t0
    return seen


@pytest.fixture(scope="module")
def served(release: Release, run: dict[str, Any]) -> str:
    """The Serve Service's URL once the ModelEndpoint is Ready and answers."""
    t0 = time.monotonic()
    url = wait_until(lambda: answering_url(release, ENDPOINT), timeout=600, interval=3,
                     what=waiting(release, f"ModelEndpoint {ENDPOINT} to answer"))
    release.timings["finished -> endpoint answering"] = time.monotonic() - t0
    return url


def test_kuberay_trains_the_job_on_a_head_and_a_worker_pod(run: dict[str, Any]) -> None:
    st = run["ftj"]["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)[-3000:]
    assert {"head", "worker"} <= run["pods"], run["pods"]
    assert st["bestMetric"] and st["modelUri"]


def test_the_result_records_the_precision_auto_resolved_to(release: Release, run: dict[str, Any]) -> None:
    uid8 = run["ftj"]["metadata"]["uid"][:8]
    result = json.loads((release.storage / release.tenant / f"{NAME}-{uid8}" / "result.json").read_text())
    auto = "bf16" if cpu_bf16_is_fast() else "fp32"  # the pods run on this machine's CPU
    assert (result["precision"], result["trials"][0]["precision"]) == (auto, auto), result


@pytest.mark.tenancy
def test_what_ray_wrote_under_runs_is_group_shared_and_the_ttl_cleanup_deletes_it(release: Release, run: dict[str, Any]) -> None:
    """Ray (uid 1000) created runs/ and everything in it with umask 0007 (the Ray containers' args, issue 21):
    directories rwx for the group, nothing for others, so the operator (uid 65532, in the storage group)
    deletes it at the TTL."""
    runs = release.storage / release.tenant / f"{NAME}-{run['ftj']['metadata']['uid'][:8]}" / "runs"
    made = [runs, *runs.rglob("*")]
    assert len(made) > 1, f"nothing under {runs}"
    modes = {p: p.lstat().st_mode for p in made}
    wrong = [f"{p} {oct(m)}" for p, m in modes.items() if not stat.S_ISLNK(m) and (
             m & stat.S_IRWXO or (stat.S_ISDIR(m) and m & stat.S_IRWXG != stat.S_IRWXG))]  # directories: the group deletes their entries
    assert not wrong, wrong[:20]
    wait_until(lambda: not runs.exists(), timeout=TTL_SECONDS + 240, interval=3,
               what=waiting(release, f"the operator's TTL cleanup to delete {runs}"))
    assert (runs.parent / "result.json").is_file()  # what the cleanup keeps


def test_the_rayservice_answers_predict_through_its_service(served: str) -> None:
    answer = predict(served, "A wonderful, moving film. I loved it.")
    assert answer["predictions"][0]["label"] in ("positive", "negative"), answer


def test_deleting_the_job_and_the_endpoint_leaves_nothing_behind(release: Release, served: str) -> None:
    release.kubectl("delete", "finetunejob", NAME, "-n", release.tenant)
    release.kubectl("delete", "modelendpoint", ENDPOINT, "-n", release.tenant)
    wait_until(lambda: not leftovers(release), timeout=300, interval=3, what=waiting(release, "the tenant namespace to be empty"))
