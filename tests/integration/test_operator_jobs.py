"""FineTuneJob -> RayJob on a real control plane, with `graft operator` running as a subprocess.
KubeRay's controller is played by the tests: they write RayJob status the way it does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graft.api.load import parse_as
from graft.api.references import references
from graft.api.spec import FineTuneJob
from graft.operator.builders.common import cpu_quantity
from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess
from tests.integration.helpers import (
    FTJ,
    MEP,
    RJ,
    apply,
    condition,
    finetunejob,
    get,
    names,
    patch,
    patch_status,
    phase_is,
    rayjob_examples,
    set_rayjob_status,
    status,
    wait_for,
    write_result,
)

pytestmark = pytest.mark.integration

EXAMPLES = rayjob_examples()


def uid(cp: ControlPlane, name: str, ns: str) -> str:
    obj = get(cp, FTJ, name, ns)
    assert obj is not None
    return obj["metadata"]["uid"]


def rayjob(cp: ControlPlane, name: str, ns: str) -> dict:
    return wait_for(lambda: get(cp, RJ, name, ns), timeout=60, what=f"RayJob {ns}/{name}")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_applying_an_example_creates_its_rayjob(operator: OperatorProcess, namespace: str, path: Path) -> None:
    cp = operator.cp
    jobs = [d for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind", "FineTuneJob") == "FineTuneJob" and not d["spec"].get("runtime", {}).get("cluster")]
    for doc in jobs:
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    for doc in jobs:
        name, res = doc["metadata"]["name"], doc["spec"].get("resources", {})
        if references(parse_as(FineTuneJob, doc).spec):  # a job it names (not applied here) must succeed first
            reason = wait_for(lambda n=name: condition(status(cp, FTJ, n, namespace), "Accepted").get("reason"),
                              what="the Accepted condition")
            assert reason == "WaitingForFineTuneJob" and get(cp, RJ, name, namespace) is None
            continue
        rj = rayjob(cp, name, namespace)
        owner = rj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("FineTuneJob", name, uid(cp, name, namespace))
        group = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        tuning = doc["spec"].get("tuning", {})
        assert group["replicas"] == res.get("workers", 1) * min(tuning.get("maxConcurrentTrials", 1), tuning.get("numTrials", 1))
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["cpu"] == cpu_quantity(res.get("cpusPerWorker", 1))
        st = wait_for(lambda n=name: status(cp, FTJ, n, namespace).get("rayJobName"), what="status.rayJobName")
        assert st == rj["metadata"]["name"]
        assert status(cp, FTJ, name, namespace)["phase"] == "Pending"


def test_rayjob_status_drives_the_job_through_pending_running_succeeded(
    operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "storage")
    apply(cp, finetunejob("ok", storage=storage, serving={"enabled": False}), namespace)
    rayjob(cp, "ok", namespace)
    set_rayjob_status(cp, "ok", namespace, "Initializing")
    wait_for(phase_is(cp, FTJ, "ok", namespace, "Pending"), what="Pending")
    set_rayjob_status(cp, "ok", namespace, "Running", "RUNNING", jobId="ok-abc", rayClusterName="ok-x7k2p",
                      dashboardURL="ok-head-svc.ns.svc.cluster.local:8265", startTime="2026-01-01T00:00:00Z")
    wait_for(phase_is(cp, FTJ, "ok", namespace, "Running"), what="Running")
    st = status(cp, FTJ, "ok", namespace)
    assert (st["rayClusterName"], st["jobSubmissionId"], st["startTime"]) == ("ok-x7k2p", "ok-abc", "2026-01-01T00:00:00Z")

    set_rayjob_status(cp, "ok", namespace, "Complete", "SUCCEEDED")
    # Succeeded only once the result is read: until then the job says what it waits for.
    msg = wait_for(lambda: "result" in status(cp, FTJ, "ok", namespace).get("message", ""), what="waiting-for-result message")
    assert msg and status(cp, FTJ, "ok", namespace)["phase"] == "Running"
    write_result(storage, namespace, "ok", uid(cp, "ok", namespace), score=0.875)
    wait_for(phase_is(cp, FTJ, "ok", namespace, "Succeeded"), what="Succeeded")
    st = status(cp, FTJ, "ok", namespace)
    assert st["bestMetric"] == "0.875" and st["result"]["bestScore"] == 0.875 and st["completionTime"]
    assert condition(st, "Succeeded")["status"] == "True"
    done = cp.kubectl("wait", "--for=condition=Succeeded", f"{FTJ}/ok", "-n", namespace, "--timeout=30s", check=False)
    assert done.returncode == 0, done.stderr  # `kubectl wait --for=condition=Succeeded ftj/NAME` works
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=ok",
                        "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert {"Pending", "Running", "Succeeded"} <= set(events)


@pytest.mark.tenancy
def test_a_finished_job_records_where_its_full_result_document_is(operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    """status.resultUri: where `status.omitted` sends a reader of a result cut to fit the status."""
    from graft.operator.result import result_uri

    cp, storage = operator.cp, str(tmp_path / namespace / "storage")
    apply(cp, finetunejob("where", storage=storage, serving={"enabled": False}), namespace)
    rayjob(cp, "where", namespace)
    write_result(storage, namespace, "where", uid(cp, "where", namespace), score=0.5)
    set_rayjob_status(cp, "where", namespace, "Complete", "SUCCEEDED")
    wait_for(phase_is(cp, FTJ, "where", namespace, "Succeeded"), what="Succeeded")
    assert status(cp, FTJ, "where", namespace)["resultUri"] == result_uri(storage, namespace, "where", uid(cp, "where", namespace))


def test_a_failed_rayjob_fails_the_job_with_kuberays_reason(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("bad"), namespace)
    rayjob(cp, "bad", namespace)
    set_rayjob_status(cp, "bad", namespace, "Failed", "FAILED", reason="AppFailed", message="Job entrypoint command failed")
    wait_for(phase_is(cp, FTJ, "bad", namespace, "Failed"), what="Failed")
    cond = condition(status(cp, FTJ, "bad", namespace), "Succeeded")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "AppFailed", "Job entrypoint command failed")


def test_a_result_reporting_failure_fails_the_job(operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "s")
    apply(cp, finetunejob("tf", storage=storage), namespace)
    rayjob(cp, "tf", namespace)
    write_result(storage, namespace, "tf", uid(cp, "tf", namespace), score=0.0, status="failed", message="all trials failed: OOM")
    set_rayjob_status(cp, "tf", namespace, "Complete", "SUCCEEDED")
    wait_for(phase_is(cp, FTJ, "tf", namespace, "Failed"), what="Failed")
    assert "all trials failed" in status(cp, FTJ, "tf", namespace)["message"]


def test_suspend_toggles_the_rayjob_and_reports_suspended(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("sus"), namespace)
    rayjob(cp, "sus", namespace)
    patch(cp, FTJ, "sus", namespace, {"spec": {"suspend": True}})
    wait_for(lambda: get(cp, RJ, "sus", namespace)["spec"].get("suspend") is True, what="RayJob.spec.suspend true")
    set_rayjob_status(cp, "sus", namespace, "Suspended")
    wait_for(phase_is(cp, FTJ, "sus", namespace, "Suspended"), what="Suspended")
    patch(cp, FTJ, "sus", namespace, {"spec": {"suspend": False}})
    wait_for(lambda: get(cp, RJ, "sus", namespace)["spec"].get("suspend") is False, what="RayJob.spec.suspend false")
    set_rayjob_status(cp, "sus", namespace, "Running", "RUNNING")
    wait_for(phase_is(cp, FTJ, "sus", namespace, "Running"), what="Running again")


def test_schema_invalid_spec_is_refused_by_the_api_server(graft_crds: ControlPlane, namespace: str) -> None:
    doc = finetunejob("z5", training={"deepspeed": {"zeroStage": 5}})
    p = apply(graft_crds, doc, namespace, check=False)
    assert p.returncode != 0
    assert "spec.training.deepspeed.zeroStage" in p.stderr and "supported values" in p.stderr.lower()


def test_semantically_invalid_spec_ends_failed_with_a_clear_condition(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("sem", training={"deepspeed": {"zeroStage": 2, "offloadParameters": True}}), namespace)
    wait_for(phase_is(cp, FTJ, "sem", namespace, "Failed"), what="Failed")
    cond = condition(status(cp, FTJ, "sem", namespace), "Accepted")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.training.deepspeed" in cond["message"] and "offloadParameters needs zeroStage: 3" in cond["message"]
    assert names(cp, RJ, namespace) == []


def test_deleting_the_job_cascades_to_its_rayjob_and_keeps_the_endpoint(
    operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "s")
    apply(cp, finetunejob("gone", storage=storage, serving={"endpoint": "keep", "promotion": "always"}), namespace)
    rayjob(cp, "gone", namespace)
    write_result(storage, namespace, "gone", uid(cp, "gone", namespace), score=0.8)
    set_rayjob_status(cp, "gone", namespace, "Complete", "SUCCEEDED")
    wait_for(lambda: get(cp, MEP, "keep", namespace), what="ModelEndpoint keep")
    job = get(cp, FTJ, "gone", namespace)
    assert job is not None and not job["metadata"].get("finalizers")  # deletion never waits for the operator
    cp.kubectl("delete", FTJ, "gone", "-n", namespace, "--wait=false")
    wait_for(lambda: get(cp, FTJ, "gone", namespace) is None, timeout=60, what="the FineTuneJob to be deleted")
    # The garbage collector of kube-controller-manager (not the operator) deletes the children.
    wait_for(lambda: get(cp, RJ, "gone", namespace) is None, timeout=180, what="garbage collection of the RayJob")
    assert get(cp, MEP, "keep", namespace) is not None


def test_finished_rayjob_is_deleted_after_its_ttl_and_the_status_kept(
    operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "s")
    apply(cp, finetunejob("ttl", storage=storage, serving={"enabled": False}, runtime={"ttlSecondsAfterFinished": 0}), namespace)
    rayjob(cp, "ttl", namespace)
    write_result(storage, namespace, "ttl", uid(cp, "ttl", namespace), score=0.7)
    set_rayjob_status(cp, "ttl", namespace, "Complete", "SUCCEEDED")
    wait_for(lambda: get(cp, RJ, "ttl", namespace) is None, what="TTL deletion of the RayJob")
    st = wait_for(lambda: condition(status(cp, FTJ, "ttl", namespace), "RayJobDeleted"), what="RayJobDeleted condition")
    assert st["status"] == "True"
    final = status(cp, FTJ, "ttl", namespace)
    assert final["phase"] == "Succeeded" and final["bestMetric"] == "0.7"


def test_restarting_the_operator_mid_job_duplicates_nothing_and_loses_nothing(
    operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "s")
    apply(cp, finetunejob("rs", storage=storage, serving={"endpoint": "rs-ep", "promotion": "always"}), namespace)
    first = rayjob(cp, "rs", namespace)
    set_rayjob_status(cp, "rs", namespace, "Running", "RUNNING")
    wait_for(phase_is(cp, FTJ, "rs", namespace, "Running"), what="Running")

    operator.kill()  # a crash, mid-job
    write_result(storage, namespace, "rs", uid(cp, "rs", namespace), score=0.91)
    set_rayjob_status(cp, "rs", namespace, "Complete", "SUCCEEDED")  # finished while nobody watched
    operator.start()
    wait_for(phase_is(cp, FTJ, "rs", namespace, "Succeeded"), what="Succeeded after restart")
    ep = wait_for(lambda: get(cp, MEP, "rs-ep", namespace), what="ModelEndpoint rs-ep")

    operator.stop()  # and once more, after everything is done
    operator.start()
    wait_for(lambda: get(cp, "rayservices.ray.io", "rs-ep", namespace), what="RayService")
    again = get(cp, RJ, "rs", namespace)
    assert again is not None and again["metadata"]["uid"] == first["metadata"]["uid"]
    assert names(cp, RJ, namespace) == ["rs"]
    assert names(cp, MEP, namespace) == ["rs-ep"]
    ep_now = get(cp, MEP, "rs-ep", namespace)
    assert ep_now is not None and ep_now["spec"]["model"]["version"] == ep["spec"]["model"]["version"] == 1
    st = status(cp, FTJ, "rs", namespace)
    assert st["result"]["bestScore"] == 0.91 and st["promotion"]["decision"] == "promoted"


def test_storage_no_ray_pod_can_reach_refuses_the_job_before_any_pod(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("nowhere", storage="/var/tmp/graft-elsewhere"), namespace)
    wait_for(phase_is(cp, FTJ, "nowhere", namespace, "Failed"), what="Failed")
    st = status(cp, FTJ, "nowhere", namespace)
    cond = condition(st, "Accepted")
    assert cond["reason"] == "StorageRequired" and "/var/tmp/graft-elsewhere" in cond["message"]
    assert "spec.checkpoints.storage" in st["message"] and names(cp, RJ, namespace) == []


def test_an_oom_killed_ray_pod_seen_through_the_pod_watch_fails_the_job(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("oomed"), namespace)
    rayjob(cp, "oomed", namespace)
    set_rayjob_status(cp, "oomed", namespace, "Running", "RUNNING", rayClusterName="oomed-c", jobId="oomed-1")
    wait_for(phase_is(cp, FTJ, "oomed", namespace, "Running"), what="Running")
    labels = {"ray.io/cluster": "oomed-c", "ray.io/node-type": "worker", "app.kubernetes.io/managed-by": "graft-operator",
              "graft.dev/finetunejob": "oomed"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "oomed-c-worker-0", "labels": labels},
           "spec": {"containers": [{"name": "ray-worker", "image": "example.org/graft-ray:1",
                                    "resources": {"limits": {"memory": "1Gi"}}}]}}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    # No kubelet here: the container state the kubelet would report after a kernel OOM kill.
    patch_status(cp, "pods", "oomed-c-worker-0", namespace, {"containerStatuses": [{
        "name": "ray-worker", "image": "example.org/graft-ray:1", "imageID": "", "ready": False, "restartCount": 1,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]})

    wait_for(phase_is(cp, FTJ, "oomed", namespace, "Failed"), timeout=30, what="Failed on the pod event")
    cond = condition(status(cp, FTJ, "oomed", namespace), "Succeeded")
    assert cond["reason"] == "OOMKilled" and "oomed-c-worker-0" in cond["message"] and "1Gi" in cond["message"]
    assert get(cp, RJ, "oomed", namespace) is None
