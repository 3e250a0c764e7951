"""A causal-LM job's model is promoted with its task, and the endpoint serves it with the OpenAI handler."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from graft.api import FineTuneJob, ModelEndpoint, TrainingResult
from graft.api.load import parse_as
from graft.operator.builders import build_endpoint, build_rayservice
from graft.operator.settings import OperatorSettings
from graft.serving.args import ServeArgs, serve_config

pytestmark = pytest.mark.unit

SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test")


def causal_lm_job() -> FineTuneJob:
    doc = {
        "metadata": {"name": "smol", "namespace": "team-a", "uid": "0123456789abcdef"},
        "spec": {"task": "causal-lm", "model": {"source": "/models/smol.gguf"}, "dataset": {"source": "chats.jsonl"}, "tuning": {"metric": "eval_loss"}},
    }
    return parse_as(FineTuneJob, doc)


def promoted_endpoint() -> dict[str, Any]:
    result = TrainingResult(job_name="smol", status="succeeded", metric="eval_loss", mode="min", best_score=1.2,
                            best_trial_id="t1", model_uri="s3://b/smol/model", started_at="t0", finished_at="t1")
    return build_endpoint(causal_lm_job(), result, "smol")


def test_the_promoted_model_carries_the_jobs_task() -> None:
    assert promoted_endpoint()["spec"]["model"]["task"] == "causal-lm"


def test_the_rayservice_runs_the_language_model_deployment() -> None:
    doc = promoted_endpoint()
    doc["metadata"]["uid"] = "feedbeef"  # as the API server would have set
    endpoint = parse_as(ModelEndpoint, doc)
    service = build_rayservice(endpoint, SETTINGS)
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["task"] == "causal-lm"
    assert app["deployments"][0]["name"] == "LanguageModel"


def test_serve_config_carries_the_token_limit_from_the_serving_spec() -> None:
    job = causal_lm_job()
    args = ServeArgs.from_serving("/m", job.spec.serving.model_copy(update={"max_tokens": 99}), task="causal-lm")
    entry = serve_config(args, app_name="smol", route_prefix="/", serving=job.spec.serving)
    assert entry["args"]["maxTokens"] == 99


def test_a_causal_lm_job_gets_lora_by_default() -> None:
    assert causal_lm_job().spec.training.lora is not None


def test_a_classification_metric_is_refused_for_causal_lm() -> None:
    from graft.api.errors import SpecError

    doc = {"spec": {"task": "causal-lm", "model": {"source": "m"}, "dataset": {"source": "d"}, "tuning": {"metric": "eval_accuracy"}}}
    with pytest.raises(SpecError, match="eval_loss"):
        parse_as(FineTuneJob, doc)
