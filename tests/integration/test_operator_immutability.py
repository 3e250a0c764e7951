"""Tenant-facing guarantees of the operator core on the real API server (issue 8 items 1, 2, 10):
every spec field but `suspend` is refused after creation by the CRD's CEL transition rules; what
admission decided (policy defaults) is persisted and runs again on resume; a queued RayJob is never
un-suspended by Graft; concurrent creates under maxConcurrentJobs admit exactly the limit."""

from __future__ import annotations

import json
import time

import pytest

from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess
from tests.integration.helpers import FTJ, RJ, apply, condition, finetunejob, get, names, patch, set_rayjob_status, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]


def edit(cp: ControlPlane, namespace: str, name: str, spec: dict) -> str:
    p = cp.kubectl("patch", FTJ, name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}), check=False)
    assert p.returncode != 0, f"the edit {spec} was accepted"
    return p.stderr


def test_editing_a_field_after_creation_is_refused_with_a_message_naming_it(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("frozen"), namespace)
    err = edit(graft_crds, namespace, "frozen", {"resources": {"workers": 8}})
    assert "spec.resources is immutable: delete the FineTuneJob and create it again" in err
    assert get(graft_crds, FTJ, "frozen", namespace)["spec"]["resources"]["workers"] == 2


def test_adding_a_field_the_job_was_created_without_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("bare"), namespace)
    err = edit(graft_crds, namespace, "bare", {"runtime": {"env": {"LD_PRELOAD": "/tmp/x.so"}}})
    assert "spec.runtime is immutable" in err


def test_suspend_can_still_change(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("pausable"), namespace)
    patch(graft_crds, FTJ, "pausable", namespace, {"spec": {"suspend": True}})
    assert get(graft_crds, FTJ, "pausable", namespace)["spec"]["suspend"] is True


# ---------------------------------------------------------------- with the operator: admitted values hold


def stays(fn: object, seconds: float, what: str) -> None:
    """`fn()` holds on every look for `seconds` (a negative check over a window, polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert fn(), f"no longer true: {what}"  # type: ignore[operator]
        time.sleep(0.5)


def tenant_policy(cp: ControlPlane, namespace: str, **spec: object) -> str:
    """A FineTunePolicy selecting only `namespace` (labelled for it); returns its name."""
    name = f"p-{namespace}"
    cp.kubectl("label", "namespace", namespace, f"graft.dev/tenant={namespace}", "--overwrite")
    doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": name},
           "spec": {"namespaceSelector": {"matchLabels": {"graft.dev/tenant": namespace}}, **spec}}
    cp.kubectl("apply", "-f", "-", input=__import__("yaml").safe_dump(doc))
    return name


def head_image(rj: dict) -> str:
    return rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_suspend_then_resume_runs_the_admitted_spec(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    policy = tenant_policy(cp, namespace, runtimeDefaults={"image": "registry.local/graft:admitted"})
    try:
        apply(cp, finetunejob("resumed"), namespace)
        first = wait_for(lambda: get(cp, RJ, "resumed", namespace), what="the RayJob")
        assert head_image(first) == "registry.local/graft:admitted"
        assert status(cp, FTJ, "resumed", namespace)["admitted"]["image"] == "registry.local/graft:admitted"
        patch(cp, FTJ, "resumed", namespace, {"spec": {"suspend": True}})
        wait_for(lambda: (get(cp, RJ, "resumed", namespace) or {}).get("spec", {}).get("suspend") is True, what="suspended RayJob")
        edit(cp, namespace, "resumed", {"runtime": {"image": "evil.example/miner:1"}})  # refused while suspended too
        cp.kubectl("patch", "finetunepolicy", policy, "--type=merge", "-p",
                   json.dumps({"spec": {"runtimeDefaults": {"image": "registry.local/graft:later"}}}))
        cp.kubectl("delete", RJ, "resumed", "-n", namespace)  # lost while suspended: resume re-creates it
        patch(cp, FTJ, "resumed", namespace, {"spec": {"suspend": False}})
        again = wait_for(lambda: (rj := get(cp, RJ, "resumed", namespace)) and rj["metadata"]["uid"] != first["metadata"]["uid"] and rj,
                         what="the re-created RayJob")
        assert head_image(again) == "registry.local/graft:admitted" and again["spec"]["suspend"] is False
    finally:
        cp.kubectl("delete", "finetunepolicy", policy, "--ignore-not-found")


def test_a_policy_default_queue_is_persisted_and_graft_never_unsuspends_the_rayjob(
    operator: OperatorProcess, namespace: str
) -> None:
    cp = operator.cp
    policy = tenant_policy(cp, namespace, runtimeDefaults={"queueName": "team-queue"})
    try:
        apply(cp, finetunejob("queued"), namespace)
        rj = wait_for(lambda: get(cp, RJ, "queued", namespace), what="the RayJob")
        assert rj["spec"]["suspend"] is True and rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
        assert wait_for(lambda: status(cp, FTJ, "queued", namespace).get("admitted"), what="status.admitted")["queueName"] == "team-queue"
    finally:
        cp.kubectl("delete", "finetunepolicy", policy, "--ignore-not-found")  # the default is gone now
    set_rayjob_status(cp, "queued", namespace, "Suspended")
    wait_for(lambda: condition(status(cp, FTJ, "queued", namespace), "Running").get("reason") == "QueuedByKueue",
             what="the job reported as queued")
    operator.stop()
    operator.start()  # and a restart: nothing in memory
    held = lambda: get(cp, RJ, "queued", namespace)["spec"]["suspend"] is True  # noqa: E731
    stays(held, seconds=8, what="the RayJob held suspended over several resyncs (every 2s)")
    fields = cp.kubectl_json("get", RJ, "queued", "-n", namespace, "--show-managed-fields")["metadata"]["managedFields"]
    managers = {f["manager"] for f in fields if "f:suspend" in json.dumps(f.get("fieldsV1", {}))}
    assert managers == {"graft-operator"}  # the creator, and no one else: no patch of spec.suspend ever


def test_ten_concurrent_creates_under_max_concurrent_jobs_1_admit_exactly_one(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    policy = tenant_policy(cp, namespace, limits={"maxConcurrentJobs": 1})
    try:
        docs = "---\n".join(__import__("yaml").safe_dump(finetunejob(f"race-{i}")) for i in range(10))
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=docs)
        wait_for(lambda: all(status(cp, FTJ, f"race-{i}", namespace).get("message") for i in range(10)), what="every job decided")
        assert len(names(cp, RJ, namespace)) == 1
        waiting = [i for i in range(10) if status(cp, FTJ, f"race-{i}", namespace)["message"].startswith("waiting:")]
        assert len(waiting) == 9
    finally:
        cp.kubectl("delete", "finetunepolicy", policy, "--ignore-not-found")
