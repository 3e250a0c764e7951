"""Typed arguments of the Serve application and the Serve config entry that deploys it.

`ServeArgs` is what `graft.serving.app:build_app` receives: from `serve.run` locally, from a
KubeRay RayService `serveConfigV2` `args:` block, or from a config PUT to Serve's REST API.
Both camelCase (`modelUri`) and snake_case (`model_uri`) keys are accepted.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, ValidationError, field_validator

from graft.api.base import ApiModel
from graft.api.errors import SpecError, format_validation_error
from graft.api.quantity import quantity_bytes
from graft.api.spec import MAX_TEXT_LENGTH, ServingSpec, Task, check_label_names

IMPORT_PATH = "graft.serving.app:build_app"
MAX_SURGE_PERCENT = 100
DEPLOYMENT_NAME = "TextClassifier"
# The Serve deployment of each task's handler (build_app dispatches on ServeArgs.task).
TASK_DEPLOYMENTS: dict[str, str] = {
    Task.TEXT_CLASSIFICATION.value: DEPLOYMENT_NAME,
    Task.CAUSAL_LM.value: "LanguageModel",
    Task.IMAGE_CLASSIFICATION.value: "ImageClassifier",
}


class ServeArgs(ApiModel):
    """Arguments of the text-classification Serve application."""

    model_uri: str = Field(min_length=1, description="Exported Hugging Face model directory: a local path or URI.")
    task: Task = Field(default=Task.TEXT_CLASSIFICATION, description="Which handler serves the model (the FineTuneJob's task).")
    label_names: list[str] | None = Field(
        default=None, description="Label names in label-id order; default: the model config's id2label."
    )
    model_version: int | str | None = Field(default=None, description="Reported with every prediction and by /healthz.")
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Most texts in one forward pass (@serve.batch).")
    batch_wait_timeout_s: float = Field(default=0.02, ge=0, le=10, description="How long a batch waits to fill up.")
    max_text_length: int = Field(default=20000, ge=1, le=MAX_TEXT_LENGTH, description="Longest accepted input text, in characters.")
    max_texts_per_request: int = Field(default=64, ge=1, le=10000, description="Most texts in one `texts` request.")
    max_seq_length: int = Field(default=128, ge=8, le=8192, description="Tokens per text; longer texts are truncated.")
    max_image_bytes: int = Field(default=10_000_000, ge=1024, le=200_000_000, description="Largest accepted image (image-classification), in bytes.")
    max_image_pixels: int = Field(default=16_777_216, ge=1, le=80_000_000, description="Most pixels of one image (image-classification).")
    max_pixels_per_request: int = Field(
        default=33_554_432, ge=1, le=400_000_000, description="Most pixels of all the images of one request (image-classification).",
    )
    require_bearer_token: bool = Field(
        default=False, description="Refuse to start without the endpoint's bearer token in the environment (spec.auth).",
    )
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto: cuda when available, else cpu.")
    precision: str = Field(default="auto", pattern=r"^(auto|fp32|bf16)$", description="auto: bf16 on GPUs that support it, else fp32.")
    torch_threads: int | None = Field(
        default=None, ge=1, le=512, description="torch intra-op threads; default: the replica's CPUs (at least 1)."
    )
    # causal-lm (OpenAI routes)
    max_tokens: int = Field(default=512, ge=1, le=32768, description="causal-lm: most tokens one request may generate.")
    served_model_name: str | None = Field(
        default=None, description="The model name clients use: /v1/models (OpenAI) and KServe v1/v2 routes (default: the endpoint's name)."
    )
    trust_remote_code: bool = Field(default=False, description="Allow the model directory's custom code (the job's model.trustRemoteCode).")

    @property
    def deployment_name(self) -> str:
        return TASK_DEPLOYMENTS.get(str(self.task), DEPLOYMENT_NAME)

    @field_validator("label_names")
    @classmethod
    def _label_names(cls, names: list[str] | None) -> list[str] | None:
        return check_label_names(names)

    @classmethod
    def parse(cls, args: ServeArgs | dict[str, Any]) -> ServeArgs:
        """Validate builder args; a SpecError names every bad field (e.g. `args.maxBatchSize: 0 must be >= 1`)."""
        if isinstance(args, ServeArgs):
            return args
        try:
            return cls.model_validate(args)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, cls, prefix="args"), source="Serve application args") from exc

    @classmethod
    def from_serving(
        cls,
        model_uri: str,
        serving: ServingSpec,
        *,
        label_names: list[str] | None = None,
        model_version: int | str | None = None,
        max_seq_length: int = 128,
        task: Task | str = Task.TEXT_CLASSIFICATION,
        served_model_name: str | None = None,
        trust_remote_code: bool = False,
        require_bearer_token: bool = False,
    ) -> ServeArgs:
        """Args for a model served with a FineTuneJob's or ModelEndpoint's `serving` spec."""
        return cls(
            model_uri=model_uri,
            task=Task(task),
            served_model_name=served_model_name,
            max_tokens=serving.max_tokens,
            label_names=label_names,
            model_version=model_version,
            max_batch_size=serving.batching.max_batch_size,
            batch_wait_timeout_s=serving.batching.batch_wait_timeout_s,
            max_text_length=serving.max_text_length,
            max_image_bytes=serving.max_image_bytes,
            max_image_pixels=serving.max_image_pixels,
            max_pixels_per_request=serving.max_pixels_per_request,
            require_bearer_token=require_bearer_token,
            max_seq_length=max_seq_length,
            trust_remote_code=trust_remote_code,
            torch_threads=max(1, math.floor(serving.resources.cpus)),
            precision=serving.precision,
        )


def max_ongoing_requests(args: ServeArgs) -> int:
    """The default in-flight requests per replica: 64, or 4 full batches if that is more.

    Requests over this limit wait in Serve's router, which polls the replicas with a backoff of up to
    0.5 s; on a saturated replica that polling starves it (bench/serving.py: a 1-CPU classifier at
    64 concurrent clients served 6 to 8 requests/s with a limit of 8 to 16, 32 to 57 with 64).
    Queued in the replica instead, requests join the next batch at once."""
    return max(64, 4 * args.max_batch_size)


def serve_config(
    args: ServeArgs,
    *,
    app_name: str,
    route_prefix: str,
    serving: ServingSpec,
    import_path: str = IMPORT_PATH,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One application entry of a Serve config (RayService `serveConfigV2.applications[]`, Serve REST API).

    Pure: the same entry is embedded by the operator, PUT to a shared cluster and deployed locally.
    """
    if not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix {route_prefix!r} must start with '/', e.g. /{route_prefix}")
    actor_options: dict[str, Any] = {"num_cpus": serving.resources.cpus, "num_gpus": serving.resources.gpus}
    if serving.resources.memory is not None:
        actor_options["memory"] = quantity_bytes(serving.resources.memory)
    autoscaling: dict[str, Any] = {
        "min_replicas": serving.min_replicas,
        "max_replicas": serving.max_replicas,
        "target_ongoing_requests": serving.autoscaling_target,
    }
    if serving.upscale_delay_seconds is not None:
        autoscaling["upscale_delay_s"] = serving.upscale_delay_seconds
    if serving.downscale_delay_seconds is not None:
        autoscaling["downscale_delay_s"] = serving.downscale_delay_seconds
    entry: dict[str, Any] = {
        "name": app_name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": args.to_wire(),
        "deployments": [
            {
                "name": args.deployment_name,
                "max_ongoing_requests": serving.max_ongoing_requests or max_ongoing_requests(args),
                "autoscaling_config": autoscaling,
                "ray_actor_options": actor_options,
                # A new model version starts all its replicas first; the old ones answer until the
                # new ones are ready (Serve's default stops old replicas first: requests fail).
                "max_surge_percent": MAX_SURGE_PERCENT,
            }
        ],
    }
    if env:
        entry["runtime_env"] = {"env_vars": dict(env)}
    return entry
