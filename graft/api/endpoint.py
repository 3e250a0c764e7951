"""ModelEndpoint: a long-lived served model that FineTuneJobs promote into."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from graft.api.base import GROUP_VERSION, ApiModel
from graft.api.safety import SECRET_KEY_PATTERN, SECRET_NAME_PATTERN
from graft.api.spec import (
    MAX_URI_LENGTH,
    NO_ENV_FROM,
    SAFE_PATH,
    ClusterRef,
    ObjectMeta,
    SecretEnvSource,
    SecretEnvVar,
    ServingSpec,
    Task,
    check_path,
    refuse_env_from,
)
from graft.api.status import CONDITIONS_LIST_MAP, DATE_TIME, Condition

AUTH_ON_SHARED_CLUSTER = (
    "spec.auth: a bearer token reaches only the pods of the endpoint's own RayService; a shared cluster's Serve "
    "cannot receive it. Remove spec.cluster (serve on a dedicated RayService) or spec.auth"
)


class ServedModel(ApiModel):
    uri: str = Field(
        min_length=1, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH,
        description="Exported Hugging Face model directory (path or URI).",
    )
    metric: str | None = Field(default=None, description="Metric the model won with.")
    score: float | None = None
    mode: Literal["max", "min"] = "max"
    source_job: str | None = Field(default=None, description="FineTuneJob that produced the model.")
    version: int = Field(default=1, ge=1, description="Promotion counter; bumped on every promotion.")
    max_seq_length: int = Field(default=128, ge=8, le=8192, description="Tokens per input; the training job's training.maxSeqLength.")
    trust_remote_code: bool = Field(default=False, description="Allow the model directory's custom code (the training job's model.trustRemoteCode).")
    task: Task = Field(default=Task.TEXT_CLASSIFICATION, description="The training job's task: picks the serving handler (causal-lm: the OpenAI-compatible API).")

    @field_validator("uri")
    @classmethod
    def _safe_uri(cls, uri: str) -> str:
        return check_path(uri) or uri


# The serving pods' environment variable holding the endpoint's bearer token (spec.auth).
BEARER_TOKEN_ENV = "GRAFT_SERVING_BEARER_TOKEN"


class TokenSecretRef(ApiModel):
    """The Secret key holding an endpoint's bearer token (read by the kubelet, never by the operator)."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN, description="Secret name, in the endpoint's namespace.")
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN, description="Key in the Secret whose value is the token.")


class EndpointAuth(ApiModel):
    """Require `Authorization: Bearer <token>` on every route of the endpoint but its health routes."""

    bearer_token_secret: TokenSecretRef


class ModelEndpointSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "!has(self.auth) || !has(self.cluster)", "message": AUTH_ON_SHARED_CLUSTER}
            ]
        }
    }

    model: ServedModel
    serving: ServingSpec = Field(default_factory=ServingSpec)
    image: str | None = Field(default=None, description="Ray image with graft installed (default: the operator's setting).")
    cluster: ClusterRef | None = Field(default=None, description="Deploy on a shared Ray cluster instead of a RayService.")
    secret_env: list[SecretEnvVar] = Field(
        default_factory=list, max_length=100,
        description="Environment variables from Secrets in the endpoint's namespace, e.g. credentials to read the model "
        "from object storage (RayService pods only; never copied anywhere).",
    )
    env_from_secrets: list[SecretEnvSource] = Field(
        default_factory=list, max_length=20, json_schema_extra=NO_ENV_FROM,
        description="No longer accepted (must be empty): name each key in secretEnv instead.",
    )

    auth: EndpointAuth | None = Field(
        default=None, description="Require a bearer token from a Secret on every request (dedicated RayService only, not with spec.cluster).",
    )

    _no_env_from = field_validator("env_from_secrets")(refuse_env_from)

    @model_validator(mode="after")
    def _auth_needs_own_cluster(self) -> ModelEndpointSpec:
        if self.auth is not None and self.cluster is not None:
            raise ValueError(AUTH_ON_SHARED_CLUSTER)
        return self


class PromotionRecord(ApiModel):
    version: int
    uri: str
    score: float | None = None
    source_job: str | None = None
    time: str = Field(json_schema_extra=DATE_TIME)


class ModelEndpointStatus(ApiModel):
    phase: str = "Pending"
    url: str | None = None
    ready_replicas: int = 0
    served_version: int | None = None
    served_uri: str | None = None
    served_score: float | None = None
    ray_service_name: str | None = None
    application: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST_MAP)
    history: list[PromotionRecord] = Field(default_factory=list, max_length=20)
    omitted: list[str] | None = Field(default=None, description="What the status left out to stay small (graft.api.status.bound_status).")


class ModelEndpoint(ApiModel):
    api_version: Literal["graft.dev/v1alpha1"] = Field(default=GROUP_VERSION)
    kind: Literal["ModelEndpoint"] = Field(default="ModelEndpoint")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ModelEndpointSpec
