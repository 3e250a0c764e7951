"""Chaos: the object store dies in the middle of a run.

Real control plane, `graft operator` under the chart's ServiceAccount, a real local Ray head, and a
real S3 server (versitygw) of this module's own, which the test stops while the second job trains.
A first job promotes its model into an endpoint; the second job, checkpointing to the bucket and
set to promote into the same endpoint, loses its storage after its first checkpoint. It must fail
with a condition that names the storage problem, promote nothing, and leave the first model serving.

And a store that fills up while Ray Train uploads a checkpoint (a server on a 40 MB disk): the
upload's failure never reaches Ray, so the checkpoint's manifests must catch it at export.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from graft import storage
from graft.api import FineTuneJob
from graft.jobs.entrypoint import STORAGE_FAILURE, TrainingFailed, run_job
from testbed.controlplane import ControlPlane
from testbed.job_driver import epochs_done, read_progress
from testbed.jobdocs import tiny_job
from testbed.ray_head import RayHead
from testbed.s3server import S3Server
from tests.e2e.chart_operator import ChartOperator, on_shared_head
from tests.integration.helpers import condition, get, status, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1500)]

ENDPOINT = "steady"
PROBE = "a great and wonderful film"


@pytest.fixture
def store() -> Iterator[S3Server]:
    """The object store the test stops mid-run (its own: the session's server stays up)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def operator(control_plane: ControlPlane, tenant: str, ray_head: RayHead, store: S3Server, tmp_path: Path) -> Iterator[ChartOperator]:
    """The platform gives every job the object store's credentials (--job-env), as a chart value would."""
    op = on_shared_head(control_plane, [tenant], tmp_path, ray_head, platform_env=store.env).start()
    yield op
    op.stop()


def _job(name: str, model: Path, data: Path, head: RayHead, storage_root: str, epochs: int, steps: int) -> dict[str, Any]:
    doc = tiny_job(model, data, name=name, training={"epochs": epochs, "maxStepsPerEpoch": steps},
                   checkpoints={"storage": storage_root, "numToKeep": 1}, runtime={"cluster": {"address": head.dashboard_url}})
    doc["spec"]["serving"] = {"endpoint": ENDPOINT, "promotion": "always", "minReplicas": 1, "maxReplicas": 1,
                              "resources": {"cpus": 0.5}}
    return doc


def _apply(cp: ControlPlane, doc: dict[str, Any], ns: str, tmp_path: Path) -> None:
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cp.kubectl("apply", "-n", ns, "-f", str(path))


def _ended(cp: ControlPlane, name: str, ns: str) -> dict[str, Any] | None:
    st = status(cp, "finetunejob", name, ns)
    return st if st.get("phase") in ("Succeeded", "Failed") else None


def _label(url: str) -> str | None:
    try:
        r = httpx.post(f"{url}/predict", json={"text": PROBE}, timeout=60)
        return str(r.json()["predictions"][0]["label"]) if r.status_code == 200 else None
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def test_storage_lost_mid_run_fails_the_job_naming_it_and_the_promoted_model_keeps_serving(
    control_plane: ControlPlane, operator: ChartOperator, ray_head: RayHead, tenant: str, store: S3Server,
    minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp, ns = control_plane, tenant
    _apply(cp, _job("first", minilm_path, sentiment_jsonl, ray_head, str(tmp_path / "local-storage"), epochs=1, steps=2), ns, tmp_path)
    first = wait_for(lambda: _ended(cp, "first", ns), timeout=600, what="the first job to finish")
    assert first["phase"] == "Succeeded", first.get("message")
    ready = wait_for(lambda: (s := status(cp, "modelendpoint", ENDPOINT, ns)).get("phase") == "Ready" and s,
                     timeout=300, what=f"endpoint {ENDPOINT} Ready")
    url = ready["url"]
    assert wait_for(lambda: _label(url), timeout=120, what=f"{url} to answer") == "positive"
    served = get(cp, "modelendpoint", ENDPOINT, ns)["spec"]["model"]

    root = f"{store.create_bucket('graft-lost')}/graft"
    _apply(cp, _job("second", minilm_path, sentiment_jsonl, ray_head, root, epochs=4, steps=6), ns, tmp_path)
    uid = wait_for(lambda: (get(cp, "finetunejob", "second", ns) or {}).get("metadata", {}).get("uid"), timeout=30, what="uid")
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    progress = f"{storage.job_dir(root, ns, 'second', uid)}/runs/second-{uid[:8]}/graft_progress.json"
    wait_for(lambda: any(epochs_done(read_progress(progress)).values()), timeout=600, interval=0.5,
             what="the second job's first checkpoint on the bucket")
    store.stop()

    second = wait_for(lambda: _ended(cp, "second", ns), timeout=900, what="the second job to end without its storage")
    verdict = condition(second, "Succeeded")
    assert (second["phase"], verdict["status"], verdict["reason"]) == ("Failed", "False", "StorageFailed"), second
    assert root.split("/graft")[0] in verdict["message"], verdict["message"]  # names the bucket
    assert "Traceback" not in verdict["message"], verdict["message"]  # the line that says what failed, not Ray's stack
    assert not second.get("promotion"), second["promotion"]
    assert get(cp, "modelendpoint", ENDPOINT, ns)["spec"]["model"] == served
    assert status(cp, "modelendpoint", ENDPOINT, ns)["phase"] == "Ready"
    assert _label(url) == "positive"  # the first job's model still answers


@pytest.fixture
def small_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """An object store on a 40 MB disk: the probe and small files fit, a checkpoint (about 90 MB of
    weights alone) does not."""
    with S3Server(size_limit_mb=40) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server


def test_a_store_that_fills_up_during_a_checkpoint_upload_fails_the_job_naming_the_lost_files(
    ray_cluster: dict[str, float], small_store: S3Server, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path,
) -> None:
    root = f"{small_store.create_bucket('graft-full')}/graft"
    doc = tiny_job(minilm_path, sentiment_jsonl, name="full", training={"maxStepsPerEpoch": 1}, checkpoints={"storage": root})
    doc["spec"]["training"].pop("deepspeed")  # plain DDP: state.pt and hf/ are what overflows
    doc["metadata"].update(namespace="team-a", uid="f0110000-0000-4000-8000-000000000001")

    with pytest.raises(TrainingFailed) as failed:
        run_job(FineTuneJob.model_validate(doc), tmp_path / "run")

    result = failed.value.result
    assert (result.status, result.reason) == ("failed", STORAGE_FAILURE), result.message
    # Either the job's check after Ray's checkpoint upload names the missing files, or the upload of
    # the signed state manifest (graft_state.json, written as the experiment runs) fails first and
    # the message names that file and the store's answer.
    checked = "incomplete on storage" in result.message and "missing" in result.message
    uploading = "graft_state.json" in result.message and "No space left on device" in result.message
    assert checked or uploading, result.message
    assert result.model_uri is None
