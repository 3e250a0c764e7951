"""ServeArgs parsing and the Serve config entry that the operator embeds and the shared-cluster mode PUTs."""

from __future__ import annotations

from typing import Any

import pytest
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from graft.api import SpecError
from graft.api.spec import ServingSpec
from graft.serving.args import DEPLOYMENT_NAME, IMPORT_PATH, ServeArgs, serve_config

pytestmark = pytest.mark.unit


def spec(**wire: Any) -> ServingSpec:
    return ServingSpec.model_validate(wire)


def test_serve_args_accept_camel_case_keys_from_a_serve_config_args_block() -> None:
    args = ServeArgs.parse(
        {"modelUri": "/models/m", "labelNames": ["neg", "pos"], "maxBatchSize": 4, "batchWaitTimeoutS": 0.05,
         "maxTextLength": 100, "maxSeqLength": 64, "modelVersion": 3}
    )
    assert (args.model_uri, args.label_names, args.max_batch_size, args.batch_wait_timeout_s) == ("/models/m", ["neg", "pos"], 4, 0.05)
    assert (args.max_text_length, args.max_seq_length, args.model_version) == (100, 64, 3)


def test_serve_args_accept_snake_case_keys() -> None:
    args = ServeArgs.parse({"model_uri": "/models/m", "max_batch_size": 2})
    assert args.model_uri == "/models/m" and args.max_batch_size == 2


def test_serve_args_defaults_follow_the_serving_spec_defaults() -> None:
    args = ServeArgs.parse({"modelUri": "/m"})
    defaults = ServingSpec()
    assert args.max_batch_size == defaults.batching.max_batch_size
    assert args.batch_wait_timeout_s == defaults.batching.batch_wait_timeout_s
    assert args.max_text_length == defaults.max_text_length
    assert args.label_names is None and args.device == "auto"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, "args.modelUri: required field is missing"),
        ({"modelUri": ""}, "args.modelUri: must not be empty"),
        ({"modelUri": "/m", "maxBatchSize": 0}, "args.maxBatchSize: 0 must be >= 1"),
        ({"modelUri": "/m", "batchWaitTimeoutS": -1}, "args.batchWaitTimeoutS: -1 must be >= 0"),
        ({"modelUri": "/m", "labelNames": ["a", "a"]}, "args.labelNames: label names must be distinct"),
        ({"modelUri": "/m", "labelNames": ["only"]}, "args.labelNames: list at least 2 label names"),
        ({"modelUri": "/m", "device": "tpu"}, "args.device: 'tpu' does not match"),
        ({"modelUri": "/m", "maxBatchSzie": 4}, "args.maxBatchSzie: unknown field; allowed fields: modelUri"),
    ],
)
def test_bad_serve_args_name_the_field_and_the_fix(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as info:
        ServeArgs.parse(doc)
    assert expected in str(info.value)


def test_from_serving_copies_batching_limits_and_threads_from_the_spec() -> None:
    serving = spec(batching={"maxBatchSize": 16, "batchWaitTimeoutS": 0.1}, maxTextLength=500, resources={"cpus": 2.5})
    args = ServeArgs.from_serving("/m", serving, label_names=["a", "b"], model_version=7, max_seq_length=256)
    assert (args.max_batch_size, args.batch_wait_timeout_s, args.max_text_length) == (16, 0.1, 500)
    assert (args.torch_threads, args.max_seq_length, args.model_version, args.label_names) == (2, 256, 7, ["a", "b"])


def test_from_serving_gives_a_fractional_cpu_replica_one_thread() -> None:
    assert ServeArgs.from_serving("/m", spec(resources={"cpus": 0.5})).torch_threads == 1


def test_serve_config_builds_the_application_entry() -> None:
    serving = spec(minReplicas=1, maxReplicas=3, targetOngoingRequests=4, resources={"cpus": 2, "gpus": 1, "memory": "2Gi"})
    args = ServeArgs.from_serving("s3://bucket/model", serving, model_version=2)
    entry = serve_config(args, app_name="sentiment", route_prefix="/sentiment", serving=serving)
    assert entry["name"] == "sentiment"
    assert entry["route_prefix"] == "/sentiment"
    assert entry["import_path"] == IMPORT_PATH == "graft.serving.app:build_app"
    assert entry["args"]["modelUri"] == "s3://bucket/model" and entry["args"]["modelVersion"] == 2
    [deployment] = entry["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    assert deployment["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4}
    assert deployment["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1, "memory": 2 * 1024**3}


def test_serve_config_leaves_out_memory_when_the_spec_sets_none() -> None:
    entry = serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="/", serving=ServingSpec())
    assert entry["deployments"][0]["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}


def test_serve_config_lets_a_full_batch_be_in_flight_per_replica() -> None:
    args = ServeArgs(model_uri="/m", max_batch_size=32)
    entry = serve_config(args, app_name="a", route_prefix="/", serving=ServingSpec())
    assert entry["deployments"][0]["max_ongoing_requests"] >= 32


def test_serve_config_args_round_trip_through_serve_args() -> None:
    args = ServeArgs.from_serving("/m", ServingSpec(), label_names=["neg", "pos"], model_version="v3")
    entry = serve_config(args, app_name="a", route_prefix="/", serving=ServingSpec())
    assert ServeArgs.parse(entry["args"]) == args


def test_serve_config_passes_env_as_runtime_env_vars() -> None:
    entry = serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="/", serving=ServingSpec(), env={"HF_HUB_OFFLINE": "1"})
    assert entry["runtime_env"] == {"env_vars": {"HF_HUB_OFFLINE": "1"}}


def test_serve_config_is_accepted_by_serves_own_config_schema() -> None:
    serving = spec(minReplicas=0, maxReplicas=2, resources={"cpus": 1, "memory": "512Mi"})
    entry = serve_config(ServeArgs.from_serving("/m", serving), app_name="sentiment", route_prefix="/sentiment", serving=serving)
    app = ServeApplicationSchema.model_validate(entry)
    ServeDeploySchema.model_validate({"applications": [entry]})
    assert app.deployments[0].autoscaling_config["max_replicas"] == 2


def test_serve_config_rejects_a_route_prefix_without_a_leading_slash() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="sentiment", serving=ServingSpec())


def test_the_autoscaling_target_defaults_to_the_batch_size() -> None:
    serving = spec(maxReplicas=2, batching={"maxBatchSize": 16})
    args = ServeArgs.from_serving("/m", serving)
    entry = serve_config(args, app_name="a", route_prefix="/a", serving=serving)
    assert entry["deployments"][0]["autoscaling_config"]["target_ongoing_requests"] == 16
    assert entry["deployments"][0]["max_ongoing_requests"] >= 16


def test_scale_delays_reach_serves_autoscaling_config_and_its_schema() -> None:
    serving = spec(maxReplicas=2, upscaleDelaySeconds=2, downscaleDelaySeconds=15)
    entry = serve_config(ServeArgs.from_serving("/m", serving), app_name="a", route_prefix="/a", serving=serving)
    app = ServeApplicationSchema.model_validate(entry)
    assert (app.deployments[0].autoscaling_config["upscale_delay_s"],
            app.deployments[0].autoscaling_config["downscale_delay_s"]) == (2, 15)


def test_without_scale_delays_serves_defaults_apply() -> None:
    entry = serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="/", serving=ServingSpec())
    assert set(entry["deployments"][0]["autoscaling_config"]) == {"min_replicas", "max_replicas", "target_ongoing_requests"}


def test_every_deployment_replaces_its_replicas_with_the_old_ones_still_answering() -> None:
    entry = serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="/", serving=ServingSpec())
    assert ServeApplicationSchema.model_validate(entry).deployments[0].max_surge_percent == 100


def test_a_replica_holds_64_requests_by_default_so_they_never_wait_in_serves_router() -> None:
    entry = serve_config(ServeArgs(model_uri="/m"), app_name="a", route_prefix="/", serving=ServingSpec())
    assert entry["deployments"][0]["max_ongoing_requests"] == 64


def test_serving_max_ongoing_requests_sets_the_deployments_limit() -> None:
    serving = spec(maxOngoingRequests=12)
    entry = serve_config(ServeArgs.from_serving("/m", serving), app_name="a", route_prefix="/", serving=serving)
    assert entry["deployments"][0]["max_ongoing_requests"] == 12
