"""Pure builders: FineTuneJob -> RayJob, ModelEndpoint -> RayService, promotion -> ModelEndpoint."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.api import FineTuneJob, ModelEndpoint, TrainingResult
from graft.api.argcodec import decode_arg
from graft.api.load import parse_as
from graft.api.spec import POD_SIZED_WORKERS_ENV
from graft.operator.builders import build_endpoint, build_rayjob, build_rayservice
from graft.operator.builders.common import cpu_quantity
from graft.operator.names import ray_name, rayservice_url
from graft.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def rayjob_examples() -> list[Path]:
    """Example files with a FineTuneJob that runs as a RayJob (not on a shared cluster)."""
    return [
        p for p in sorted(EXAMPLES.glob("*.yaml"))
        if any(d and d.get("kind", "FineTuneJob") == "FineTuneJob" and not d["spec"].get("runtime", {}).get("cluster")
               for d in yaml.safe_load_all(p.read_text()))
    ]
SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test")


def job(**spec: Any) -> FineTuneJob:
    doc = {
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "0123456789abcdef"},
        "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "d.csv"}, **spec},
    }
    return parse_as(FineTuneJob, doc)


def endpoint(**spec: Any) -> ModelEndpoint:
    doc = {
        "metadata": {"name": "sentiment", "namespace": "team-a", "uid": "feedbeef"},
        "spec": {"model": {"uri": "s3://b/models/v1", "metric": "eval_accuracy", "score": 0.8, "version": 3}, **spec},
    }
    return parse_as(ModelEndpoint, doc)


def result(**kw: Any) -> TrainingResult:
    base = dict(job_name="demo", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.9,
                best_trial_id="t1", model_uri="s3://b/demo/model", started_at="t0", finished_at="t1")
    return TrainingResult(**{**base, **kw})


def test_rayjob_is_owned_by_the_finetunejob_as_controller() -> None:
    rj = build_rayjob(job(), SETTINGS)
    assert rj["apiVersion"] == "ray.io/v1" and rj["kind"] == "RayJob"
    assert rj["metadata"]["ownerReferences"] == [{
        "apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "name": "demo", "uid": "0123456789abcdef",
        "controller": True, "blockOwnerDeletion": True,
    }]


def test_rayjob_name_is_deterministic_and_fits_kuberay_limits() -> None:
    long = "9" + "x" * 62
    assert ray_name("demo") == "demo"
    assert ray_name(long) == ray_name(long)
    assert len(ray_name(long)) <= 47 and ray_name(long)[0].isalpha()
    assert ray_name(long) != ray_name(long[:-1] + "y")


def test_the_cluster_fits_max_concurrent_trials_and_the_head_takes_no_training_cpu() -> None:
    rj = build_rayjob(job(resources={"workers": 2}, tuning={"numTrials": 6, "maxConcurrentTrials": 3}), SETTINGS)
    cluster = rj["spec"]["rayClusterSpec"]
    assert cluster["workerGroupSpecs"][0]["replicas"] == 6
    assert SETTINGS.driver_resource
    head = cluster["headGroupSpec"]
    assert head["resources"] == {"cpu": "0", SETTINGS.driver_resource: "3"}
    assert "num-cpus" not in head["rayStartParams"]


def test_worker_group_is_sized_from_spec_resources() -> None:
    rj = build_rayjob(job(resources={"workers": 3, "cpusPerWorker": 1.5, "gpusPerWorker": 2, "memoryPerWorker": "6Gi"}), SETTINGS)
    (group,) = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (3, 3, 3)
    res = group["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"cpu": "1500m", "memory": "6Gi", "nvidia.com/gpu": "2"}
    assert res["requests"] == res["limits"]


def test_image_comes_from_the_spec_else_the_operator_default() -> None:
    def images(rj: dict[str, Any]) -> set[str]:
        cs = rj["spec"]["rayClusterSpec"]
        pods = [cs["headGroupSpec"]] + cs["workerGroupSpecs"]
        return {p["template"]["spec"]["containers"][0]["image"] for p in pods}

    assert images(build_rayjob(job(), SETTINGS)) == {"example.org/graft-ray:test"}
    assert images(build_rayjob(job(runtime={"image": "mine:1"}), SETTINGS)) == {"mine:1"}


def test_entrypoint_carries_the_spec_and_a_result_uri_in_the_jobs_own_directory() -> None:
    rj = build_rayjob(job(checkpoints={"storage": "s3://bucket/runs"}), SETTINGS)
    argv = shlex.split(rj["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "graft.jobs"]
    assert decode_arg(argv[argv.index("--result-b64") + 1]) == "s3://bucket/runs/team-a/demo-01234567/result.json"
    doc = json.loads(decode_arg(argv[argv.index("--spec-b64") + 1]))
    assert doc["spec"]["checkpoints"]["storage"] == "s3://bucket/runs"  # the root: the job adds its own directory
    assert doc["metadata"] == {"name": "demo", "namespace": "team-a", "uid": "0123456789abcdef"}


def test_the_job_computes_the_same_directory_as_the_operator() -> None:
    from graft import storage
    from graft.jobs.tune import experiment_name
    from graft.operator.storage import job_dir

    j = job(checkpoints={"storage": "s3://bucket/runs"})
    argv = shlex.split(build_rayjob(j, SETTINGS)["spec"]["entrypoint"])
    doc = json.loads(decode_arg(argv[argv.index("--spec-b64") + 1]))
    sent = FineTuneJob.model_validate(doc)
    assert storage.job_dir(sent.spec.checkpoints.storage or "", sent.metadata.namespace, sent.metadata.name, doc["metadata"]["uid"]) == job_dir(j, SETTINGS)
    assert experiment_name(sent) == "demo-01234567"  # the same on every attempt


def test_without_storage_the_result_stays_in_the_head_pod() -> None:
    argv = shlex.split(build_rayjob(job(), SETTINGS)["spec"]["entrypoint"])
    assert decode_arg(argv[argv.index("--result-b64") + 1]) == "/tmp/graft/demo/result.json"


def _head_resources(obj: dict[str, Any]) -> dict[str, Any]:
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    return dict(cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"])


def test_a_head_cpu_limit_raises_only_the_heads_limit_above_its_request() -> None:
    sized = OperatorSettings(head_cpu="250m", head_cpu_limit="1")
    for obj in (build_rayjob(job(), sized), build_rayservice(endpoint(), sized)):
        res = _head_resources(obj)
        assert (res["requests"]["cpu"], res["limits"]["cpu"]) == ("250m", "1")
        assert res["requests"]["memory"] == res["limits"]["memory"]


def test_without_a_head_cpu_limit_the_heads_limit_is_its_request() -> None:
    res = _head_resources(build_rayjob(job(), OperatorSettings(head_cpu="250m")))
    assert res["requests"] == res["limits"]


def test_head_advertises_the_trial_driver_resource_graft_jobs_asks_for() -> None:
    from graft.jobs.tune import TRIAL_DRIVER_RESOURCE

    head = build_rayjob(job(tuning={"maxConcurrentTrials": 3}), SETTINGS)["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["resources"][TRIAL_DRIVER_RESOURCE] == "3"


def test_graft_jobs_runs_the_spec_the_rayjob_carries() -> None:
    from graft.jobs.__main__ import parse_job_json

    j = job(training={"epochs": 5}, checkpoints={"storage": "s3://b/r"})
    argv = shlex.split(build_rayjob(j, SETTINGS)["spec"]["entrypoint"])
    loaded = parse_job_json(decode_arg(argv[argv.index("--spec-b64") + 1]))
    assert loaded.spec.training == j.spec.training and loaded.metadata.name == "demo"
    assert loaded.spec.training.deepspeed.zero_stage == 0  # defaults applied


def test_runtime_env_adds_spec_env_but_never_overrides_the_operators_keys() -> None:
    rj = build_rayjob(job(runtime={"env": {"RAY_USAGE_STATS_ENABLED": "1", "EXTRA": "1"}}), SETTINGS)
    env = yaml.safe_load(rj["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["EXTRA"] == "1" and env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_hub_access_is_on_unless_the_operator_turns_it_off() -> None:
    env = yaml.safe_load(build_rayjob(job(), SETTINGS)["spec"]["runtimeEnvYAML"])["env_vars"]
    assert "HF_HUB_OFFLINE" not in env
    offline = SETTINGS.model_copy(update={"job_env": {**SETTINGS.job_env, "HF_HUB_OFFLINE": "1"}})
    assert yaml.safe_load(build_rayjob(job(), offline)["spec"]["runtimeEnvYAML"])["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_lifecycle_fields_follow_spec_runtime_and_suspend() -> None:
    spec = build_rayjob(
        job(suspend=True, runtime={"ttlSecondsAfterFinished": 60, "activeDeadlineSeconds": 3600, "backoffLimit": 2}), SETTINGS
    )["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert (spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (60, 3600, 2)
    assert spec["suspend"] is True and spec["submissionMode"] == "K8sJobMode"


@pytest.mark.parametrize("path", rayjob_examples(), ids=lambda p: p.name)
def test_every_example_renders_a_rayjob(path: Path) -> None:
    j = next(
        parse_as(FineTuneJob, d) for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind", "FineTuneJob") == "FineTuneJob" and not d["spec"].get("runtime", {}).get("cluster")
    )
    j.metadata.namespace = "ns"
    j.metadata.uid = "uid-1"  # type: ignore[attr-defined]
    rj = build_rayjob(j, SETTINGS)
    tuning = j.spec.tuning
    assert rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == j.spec.resources.workers * min(tuning.max_concurrent_trials, tuning.num_trials)


def test_cpu_quantities_are_canonical() -> None:
    assert [cpu_quantity(x) for x in (1, 2.0, 0.5, 1.25)] == ["1", "2", "500m", "1250m"]


def test_rayservice_serves_the_promoted_model_through_build_app() -> None:
    rs = build_rayservice(endpoint(), SETTINGS)
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = cfg["applications"]
    assert app["import_path"] == "graft.serving.app:build_app"
    assert app["args"]["modelUri"] == "s3://b/models/v1" and app["args"]["modelVersion"] == 3
    assert app["route_prefix"] == "/" and app["name"] == "sentiment"
    assert rs["metadata"]["annotations"]["graft.dev/model-version"] == "3"
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "ModelEndpoint"


def test_rayservice_autoscales_serve_replicas_and_pods_together() -> None:
    rs = build_rayservice(endpoint(serving={"minReplicas": 1, "maxReplicas": 4, "targetOngoingRequests": 3}), SETTINGS)
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    auto = app["deployments"][0]["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 4, 3)
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 4)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert rs["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_a_promotion_changes_only_the_serve_config() -> None:
    a = build_rayservice(endpoint(), SETTINGS)
    e = endpoint()
    e.spec.model.uri, e.spec.model.version = "s3://b/models/v2", 4
    b = build_rayservice(e, SETTINGS)
    assert a["spec"]["rayClusterConfig"] == b["spec"]["rayClusterConfig"]
    assert a["spec"]["serveConfigV2"] != b["spec"]["serveConfigV2"]


def test_new_endpoint_is_not_owned_by_the_job() -> None:
    ep = build_endpoint(job(serving={"endpoint": "sentiment"}), result(), "sentiment")
    assert "ownerReferences" not in ep["metadata"]
    parsed = parse_as(ModelEndpoint, ep)
    assert parsed.spec.model.version == 1 and parsed.spec.model.source_job == "demo"
    assert parsed.spec.model.uri == "s3://b/demo/model" and parsed.spec.model.score == 0.9


def test_rayservice_url_names_the_kuberay_serve_service() -> None:
    assert rayservice_url("sentiment", "team-a") == "http://sentiment-serve-svc.team-a.svc:8000/"


def test_rayjob_runtime_env_says_workers_are_pod_sized() -> None:
    rj = build_rayjob(job(resources={"memoryPerWorker": "2Gi"}), SETTINGS)
    assert yaml.safe_load(rj["spec"]["runtimeEnvYAML"])["env_vars"][POD_SIZED_WORKERS_ENV] == "1"


@pytest.mark.parametrize(("ttl", "cluster_ttl"), [(None, 60), (0, 0), (30, 30), (3600, 60)])
def test_the_ray_cluster_goes_within_a_minute_of_the_end_whatever_the_rayjob_ttl(ttl: int | None, cluster_ttl: int) -> None:
    runtime = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    spec = build_rayjob(job(runtime=runtime), SETTINGS)["spec"]
    assert (spec["shutdownAfterJobFinishes"], spec["ttlSecondsAfterFinished"]) == (True, cluster_ttl)
