"""The flagship on the real node, as a platform team and a tenant would run it:

`helm install` the chart (the operator runs as a Pod from the image built by scripts/images.sh),
`kubectl apply -f examples/finetune-kubernetes.yaml` in a tenant namespace, KubeRay runs the RayJob's
cluster (head + 2 workers, real MiniLM, real Rotten Tomatoes reviews, ZeRO-2, precision auto, 2 trials with
ASHA), the result is read, the ModelEndpoint's RayService comes up through KubeRay and its Serve
Service answers /predict; `graft logs` works during and after the job. Then, against that endpoint:
a worse job is refused under `ifBetter`; promoting its model by hand rolls the RayService to it
while requests keep succeeding; under load Serve adds a replica and KubeRay's autoscaler a worker
pod, and both shrink back when the load stops. Deleting the objects leaves nothing behind.

The tests of this module run in order on one job (module fixtures); each asserts one stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.kuberay.diagnose import waiting
from tests.kuberay.endpoint import answering_url, deployment, predict, running_replicas, serve_dashboard, serve_workers
from tests.kuberay.load import Load
from tests.kuberay.release import RELEASE, REPO, Release, graft_cli, installed, leftovers, service_url

# A test's time includes its module fixtures' set-up: training (TRAIN_TIMEOUT) and the three failure
# cases each wait longer than the suite's default 1200 s, and report their own state when they time out.
pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.slow, pytest.mark.timeout(2400)]

EXAMPLE = REPO / "examples" / "finetune-kubernetes.yaml"
JOB = yaml.safe_load(EXAMPLE.read_text())
NAME = JOB["metadata"]["name"]
ENDPOINT = JOB["spec"]["serving"]["endpoint"]
TRAIN_TIMEOUT = 1500  # apply -> Succeeded, 2-core node under load


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "flagship") as rel:
        yield rel


@pytest.fixture(scope="module")
def run(release: Release) -> dict[str, Any]:
    """Apply the example and follow it to Succeeded, recording what was seen on the way."""
    seen: dict[str, Any] = {"workers_running": 0, "head_running": False, "live_log": "", "progress": []}
    t0 = time.monotonic()
    release.kubectl("apply", "-n", release.tenant, "-f", str(EXAMPLE))

    def mark(stage: str) -> None:
        release.timings.setdefault(f"apply -> {stage}", time.monotonic() - t0)

    def step() -> dict[str, Any] | None:
        pods = release.items("pods", "-l", "ray.io/is-ray-node=yes")
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        heads = [p for p in running if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        workers = [p for p in running if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
        seen["head_running"] = seen["head_running"] or bool(heads)
        seen["workers_running"] = max(seen["workers_running"], len(workers))
        if heads:
            mark("head pod running")
        if len(workers) >= JOB["spec"]["resources"]["workers"]:
            mark("worker pods running")
        ftj = release.get("finetunejob", NAME) or {}
        st = ftj.get("status") or {}
        if st.get("phase") == "Running":
            mark("job running")
            if (st.get("progress") or {}).get("trials"):
                mark("live progress in status")
                seen["progress"].append(st["progress"])
            if not seen["live_log"] and st.get("rayClusterName"):
                seen["live_log"] = _logs_via_head(release, st["rayClusterName"])
        if st.get("phase") in ("Succeeded", "Failed", "Rejected"):
            mark(st["phase"])
            return ftj
        return None

    ftj = wait_until(step, timeout=TRAIN_TIMEOUT, interval=3, what=waiting(release, f"FineTuneJob {NAME} to finish"))
    seen["ftj"] = ftj
    return seen




def _logs_via_head(release: Release, cluster: str) -> str:
    """`graft logs` on the live job, reading the head's dashboard through its Service."""
    try:
        url = service_url(release, f"{cluster}-head-svc", "dashboard")
    except AssertionError:
        return ""
    p = graft_cli(release, "logs", NAME, "-n", release.tenant, "--dashboard", url)
    return p.stdout if p.returncode == 0 and "[graft]" in p.stdout else ""


@pytest.fixture(scope="module")
def served(release: Release, run: dict[str, Any]) -> str:
    """The Serve endpoint's URL once the ModelEndpoint is Ready and answers."""
    t0 = time.monotonic()
    url = wait_until(lambda: answering_url(release, ENDPOINT), timeout=600, interval=3, what=waiting(release, f"ModelEndpoint {ENDPOINT} to answer"))
    release.timings["Succeeded -> endpoint answering"] = time.monotonic() - t0
    return url


def test_the_operator_runs_as_a_pod_under_the_charts_service_account(release: Release) -> None:
    (pod,) = release.items("pods", "-l", "app.kubernetes.io/component=operator", namespace=release.namespace)
    assert pod["spec"]["serviceAccountName"] == RELEASE  # the chart's ServiceAccount: the release's full name
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/graft-dev/graft-operator:0.1.0"
    assert pod["status"]["phase"] == "Running"


def test_kuberay_runs_the_job_on_a_head_and_two_worker_pods(run: dict[str, Any]) -> None:
    assert run["head_running"] and run["workers_running"] == 2


def test_kubectl_get_shows_live_progress_while_the_job_runs(run: dict[str, Any]) -> None:
    assert run["progress"], "status.progress never filled while the job ran"
    last = run["progress"][-1]
    assert last["trialsTotal"] == 2 and last["jobPhase"] in ("loading", "tuning", "exporting", "done"), last


def test_graft_logs_follows_the_live_job(run: dict[str, Any]) -> None:
    assert "[graft] phase" in run["live_log"], run["live_log"][-2000:]


def test_the_job_succeeds_with_asha_over_two_trials_and_its_result_on_storage(release: Release, run: dict[str, Any]) -> None:
    st = run["ftj"]["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)[-3000:]
    assert len(st["trials"]) == 2, st["trials"]
    assert st["bestMetric"] and st["modelUri"]
    uid8 = run["ftj"]["metadata"]["uid"][:8]
    job_dir = release.storage / release.tenant / f"{NAME}-{uid8}"
    assert (job_dir / "result.json").is_file(), sorted(str(p) for p in release.storage.rglob("*"))[:50]
    assert (job_dir / "model").is_dir()


def test_the_endpoint_answers_through_its_service_with_the_right_label(served: str) -> None:
    negative = predict(served, "A dreadful, boring film. Terrible acting and an awful, stupid plot. I hated it.")
    positive = predict(served, "A wonderful, moving film. Brilliant acting and a beautiful story. I loved it.")
    assert negative["predictions"][0]["label"] == "negative", negative
    assert positive["predictions"][0]["label"] == "positive", positive


def test_graft_logs_reads_the_log_after_the_cluster_is_gone(release: Release, run: dict[str, Any], served: str) -> None:
    st = run["ftj"]["status"]
    wait_until(lambda: release.get("raycluster", st["rayClusterName"]) is None, timeout=300, interval=3,
               what="the RayJob's cluster to be deleted")
    p = graft_cli(release, "logs", NAME, "-n", release.tenant, "--tail", "40")  # Ray's own lines interleave
    assert p.returncode == 0, p.stderr
    decode = json.JSONDecoder().raw_decode  # the event's JSON, whatever follows it on the line
    events = [decode(line.split("GRAFT_EVENT ", 1)[1])[0] for line in p.stdout.splitlines() if "GRAFT_EVENT " in line]
    finished = [e for e in events if e["type"] == "job_finished"]
    assert finished and finished[-1]["status"] == "succeeded", p.stdout


# --------------------------------------------------------------------------- promotion and autoscaling
def _promoting(name: str, promotion: str, **training: Any) -> dict[str, Any]:
    """A one-worker, one-trial variant of the example (same data and validation rows) that promotes
    into the example's endpoint under `promotion`."""
    doc = _variant(name, training=training)
    doc["spec"]["serving"] = {"enabled": True, "endpoint": ENDPOINT, "promotion": promotion}
    return doc


def _finishes(release: Release, doc: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Apply `doc` and wait until it ends (and, when it succeeded, its promotion is decided)."""
    name = doc["metadata"]["name"]
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))

    def ended() -> dict[str, Any] | None:
        st = (release.get("finetunejob", name) or {}).get("status") or {}
        if st.get("phase") in ("Failed", "Rejected") or (st.get("phase") == "Succeeded" and st.get("promotion")):
            return dict(st)
        return None

    return dict(wait_until(ended, timeout=timeout, interval=3,
                           what=waiting(release, f"FineTuneJob {name} to finish and be promoted or refused")))


def _served_model(release: Release) -> dict[str, Any]:
    return dict((release.get("modelendpoint", ENDPOINT) or {})["spec"]["model"])


@pytest.fixture(scope="module")
def worse(release: Release, served: str) -> dict[str, Any]:
    """A worse job (one step at learning rate 1e-7) promoting into the endpoint under `ifBetter`;
    its final status."""
    return _finishes(release, _promoting("worse", "ifBetter", epochs=1, maxStepsPerEpoch=1, learningRate=1e-7))


def test_a_worse_job_is_refused_under_if_better_and_the_endpoint_keeps_its_model(
    release: Release, served: str, worse: dict[str, Any],
) -> None:
    assert worse["phase"] == "Succeeded", worse.get("message")
    assert worse["promotion"]["decision"] == "refused" and "not better" in worse["promotion"]["reason"], worse["promotion"]
    model = _served_model(release)
    assert (model["version"], model["sourceJob"]) == (1, NAME)
    assert predict(served, "fine")["model_version"] == 1


def test_a_promotion_rolls_the_rayservice_to_the_new_model_while_every_request_succeeds(
    release: Release, served: str, worse: dict[str, Any],
) -> None:
    """The tenant promotes the refused model by hand (the `manual` path: an edit of the endpoint's
    model, the same change the operator's promotion writes); KubeRay applies the new serveConfigV2
    in place and Serve replaces the replica while the old one answers."""
    old = _served_model(release)["version"]
    promotion = {"spec": {"model": {"uri": worse["modelUri"], "version": old + 1, "sourceJob": "worse",
                                    "score": worse["result"]["bestScore"]}}}
    with Load(served, clients=1, pause=0.25) as load:
        wait_until(lambda: load.answered(old) >= 5, timeout=120, interval=1, what=lambda: f"requests answered ({load.summary()})")
        release.kubectl("patch", "modelendpoint", ENDPOINT, "-n", release.tenant, "--type=merge", "-p", json.dumps(promotion))
        promoted = time.monotonic()
        wait_until(lambda: load.answered(old + 1) >= 5, timeout=600, interval=2,
                   what=lambda: waiting(release, f"the new model to answer ({load.summary()})")())
        release.timings["promotion -> new model answering"] = time.monotonic() - promoted
    assert not load.failures, load.summary()
    release.timings["requests during the rollout"] = float(sum(load.versions.values()))


def test_under_load_serve_adds_a_replica_kuberay_a_pod_and_both_shrink_back_after(release: Release, served: str) -> None:
    wait_until(lambda: not release.items("rayclusters.ray.io", "-l", "graft.dev/finetunejob"), timeout=300, interval=3,
               what=waiting(release, "the training jobs' Ray clusters to be gone (the node has room for a second Serve pod then)"))
    # Serve's own delays are 30 s up and 600 s down; the endpoint's serving spec shortens them.
    release.kubectl("patch", "modelendpoint", ENDPOINT, "-n", release.tenant, "--type=merge",
                    "-p", json.dumps({"spec": {"serving": {"upscaleDelaySeconds": 2, "downscaleDelaySeconds": 10}}}))
    dashboard = serve_dashboard(release, ENDPOINT)
    wait_until(lambda: deployment(dashboard)["config"]["autoscaling_config"].get("downscale_delay_s") == 10,
               timeout=180, interval=2, what="KubeRay to apply the new autoscaling config to Serve")
    wait_until(lambda: (running_replicas(dashboard), serve_workers(release, ENDPOINT)) == (1, 1), timeout=300, interval=3,
               what=waiting(release, "one Serve replica on one worker pod (the rollout's old pod idles out)"))

    with Load(served, clients=8) as load:
        t0 = time.monotonic()
        wait_until(lambda: running_replicas(dashboard) == 2, timeout=420, interval=2,
                   what=lambda: waiting(release, f"Serve to run 2 replicas ({load.summary()})")())
        release.timings["load -> 2 Serve replicas"] = time.monotonic() - t0
        assert serve_workers(release, ENDPOINT) == 2, "the second replica runs without a second worker pod"
    t1 = time.monotonic()
    wait_until(lambda: running_replicas(dashboard) == 1, timeout=300, interval=2, what="Serve to scale back to 1 replica")
    release.timings["load stopped -> 1 Serve replica"] = time.monotonic() - t1
    wait_until(lambda: serve_workers(release, ENDPOINT) == 1, timeout=300, interval=3, what=waiting(release, "KubeRay to remove the idle worker pod"))
    release.timings["load stopped -> 1 worker pod"] = time.monotonic() - t1
    assert not load.failures, load.summary()
    assert predict(served, "fine")["predictions"][0]["label"] in ("positive", "negative")


def test_deleting_the_job_and_the_endpoint_leaves_nothing_running(release: Release, served: str) -> None:
    release.kubectl("delete", "finetunejob", NAME, "-n", release.tenant)
    release.kubectl("delete", "modelendpoint", ENDPOINT, "-n", release.tenant)
    wait_until(lambda: not leftovers(release), timeout=300, interval=3, what=waiting(release, "the tenant namespace to be empty"))


def test_storage_outlives_the_pods(release: Release, run: dict[str, Any]) -> None:
    uid8 = run["ftj"]["metadata"]["uid"][:8]
    assert (Path(release.storage) / release.tenant / f"{NAME}-{uid8}" / "result.json").is_file()


# --------------------------------------------------------------------------- failures a user hits
def _variant(name: str, **spec: Any) -> dict[str, Any]:
    """The example, renamed, one worker and one trial, no endpoint, with `spec` merged in."""
    doc = json.loads(json.dumps(JOB))
    doc["metadata"]["name"] = name
    s = doc["spec"]
    s["resources"]["workers"], s["tuning"]["numTrials"] = 1, 1
    s["tuning"].pop("searchSpace", None)
    s["serving"] = {"enabled": False}
    for key, value in spec.items():
        s[key] = {**s.get(key, {}), **value}
    return doc


def _ended(release: Release, name: str) -> dict[str, Any] | None:
    """The status of FineTuneJob `name` once it has ended (None before)."""
    st = (release.get("finetunejob", name) or {}).get("status") or {}
    return dict(st) if st.get("phase") in ("Failed", "Succeeded", "Rejected") else None


def _missing_data(release: Release) -> str:
    return f"{release.storage}/{release.tenant}/no-such-dir/reviews.csv"  # where the tenant may read


@pytest.fixture(scope="module")
def failures(release: Release) -> dict[str, dict[str, Any]]:
    """Three jobs a user gets wrong, applied at once (the node fits two of them side by side; the
    third starts when the failed image's pods are gone), each followed until it fails and none of
    its pods is left; name -> final status."""
    docs = [
        _variant("bad-image", runtime={"image": "graft.local/no-such-image:1"}),
        _variant("no-data", dataset={"source": _missing_data(release), "filter": None}),
        _variant("oom", resources={"memoryPerWorker": "400Mi"}),
    ]
    # What an earlier stage that failed left behind would take the room these jobs need.
    release.kubectl("delete", "finetunejobs,modelendpoints", "--all", "-n", release.tenant, "--wait=false")
    wait_until(lambda: not release.items("pods", "-l", "ray.io/is-ray-node=yes"), timeout=300, interval=3,
               what=waiting(release, "the Ray pods of earlier stages to be gone"))
    for doc in docs:
        release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))

    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        name = doc["metadata"]["name"]
        out[name] = wait_until(lambda name=name: _ended(release, name), timeout=900, interval=3,
                               what=waiting(release, f"FineTuneJob {name} to fail"))
    for name in out:
        wait_until(lambda name=name: not release.items("pods", "-l", f"graft.dev/finetunejob={name}"), timeout=300,
                   interval=3, what=waiting(release, f"the pods of {name} to be gone"))
        release.kubectl("delete", "finetunejob", name, "-n", release.tenant)
    return out


def _reason(st: dict[str, Any]) -> str:
    return next(c["reason"] for c in st["conditions"] if c["type"] == "Succeeded")


def test_an_image_that_does_not_exist_fails_the_job_and_leaves_no_pod(failures: dict[str, dict[str, Any]]) -> None:
    st = failures["bad-image"]
    assert (st["phase"], _reason(st)) == ("Failed", "ImagePullFailed"), st
    assert "graft.local/no-such-image:1" in st["message"] and "spec.runtime.image" in st["message"]


def test_a_dataset_path_missing_in_the_pods_fails_the_job_naming_it(release: Release, failures: dict[str, dict[str, Any]]) -> None:
    st = failures["no-data"]
    assert st["phase"] == "Failed", st
    assert _missing_data(release) in st["message"], st["message"]


def test_a_worker_out_of_memory_fails_the_job_naming_memory_per_worker_and_leaves_no_pod(failures: dict[str, dict[str, Any]]) -> None:
    """Ray's memory monitor kills the Train worker at 95% of its pod's limit, before the kernel
    would (a kernel OOM kill is reason OOMKilled: tests/unit/test_operator_pod_failures.py)."""
    st = failures["oom"]
    assert st["phase"] == "Failed", st
    assert "ran out of memory" in st["message"] and "spec.resources.memoryPerWorker" in st["message"], st["message"]


# --------------------------------------------------------------------------- a lost worker pod
@pytest.mark.chaos
def test_a_deleted_worker_pod_is_replaced_by_kuberay_and_its_trial_resumes_from_the_last_checkpoint(release: Release) -> None:
    """Preemption of a Ray worker pod mid-trial: KubeRay creates a replacement, it joins the Ray
    cluster, Ray Train restarts the trial's worker (training.maxFailures: 1, the default) and the
    trial continues from its latest checkpoint; the job succeeds and its result records the resume."""
    name = "survivor"
    doc = _variant(name, training={"epochs": 5, "maxStepsPerEpoch": 6})
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))
    workers = ("pods", "-l", f"graft.dev/finetunejob={name},ray.io/node-type=worker")

    def checkpointed() -> bool:
        progress = ((release.get("finetunejob", name) or {}).get("status") or {}).get("progress") or {}
        return bool(progress.get("trialsRunning")) and (progress.get("epoch") or 0) >= 1

    wait_until(checkpointed, timeout=900, interval=2, what=waiting(release, f"{name}'s trial to finish an epoch"))
    at_deletion = (release.get("finetunejob", name) or {}).get("status", {}).get("progress")
    (lost,) = [p["metadata"]["name"] for p in release.items(*workers) if p["status"].get("phase") == "Running"]
    # A preempted node's pods get little or no grace. With the default 30 s the worker kept
    # training through the grace and finished the trial before the kill: nothing lost, nothing resumed.
    release.kubectl("delete", "pod", lost, "-n", release.tenant, "--wait=false", "--grace-period=1")
    wait_until(lambda: any(p["metadata"]["name"] != lost and p["status"].get("phase") == "Running" for p in release.items(*workers)),
               timeout=300, interval=2, what=waiting(release, f"KubeRay to replace worker pod {lost}"))

    st = wait_until(lambda: _ended(release, name), timeout=900, interval=3, what=waiting(release, f"FineTuneJob {name} to finish"))
    assert st["phase"] == "Succeeded", st.get("message")
    result = st["result"]
    assert result["failuresSurvived"] >= 1, (at_deletion, result, st["trials"])
    (worker,) = [r for r in result["resumes"] if r["kind"] == "worker"]
    assert min(worker["trialsResumed"].values()) >= 1, worker  # from a checkpoint, not from scratch
    (trial,) = st["trials"]
    assert trial["epochsCompleted"] == 5
    release.kubectl("delete", "finetunejob", name, "-n", release.tenant)
