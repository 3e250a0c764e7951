"""The FineTuneJob spec: the single source of truth for `graft run`, the operator and the CRD."""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from graft.api.base import GROUP_VERSION, ApiModel
from graft.api.quantity import QUANTITY_PATTERN
from graft.api.references import SCHEME as REFERENCE_SCHEME
from graft.api.references import check_reference, references
from graft.api.safety import (
    CLUSTER_ADDRESS_PATTERN,
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    SECRET_KEY_PATTERN,
    SECRET_NAME_PATTERN,
    TRAVERSAL_CEL_RULES,
    reserved_env_problem,
    traversal_problem,
)

# Paths and URIs (sources, storage): bounded, and never climbing out with `..` (graft.api.safety).
MAX_URI_LENGTH = 2048
SAFE_PATH: dict[str, Any] = {"x-kubernetes-validations": TRAVERSAL_CEL_RULES}


def _no_traversal(value: str | None) -> str | None:
    if value is not None:
        problem = traversal_problem(value)
        if problem:
            raise ValueError(problem)
    return value


def check_path(value: str | None) -> str | None:
    """A path or URI field value without `..` segments (tenant safety: see docs/tenancy.md), and
    not a `finetunejob://` reference (those name a model: spec.model.source, spec.distillation.teacher)."""
    if value is not None and value.startswith(REFERENCE_SCHEME):
        raise ValueError(
            f"{value!r}: a {REFERENCE_SCHEME} reference names another job's trained model; only "
            "spec.model.source and spec.distillation.teacher take one. Give a path or URI here"
        )
    return _no_traversal(value)


def check_model_path(value: str | None) -> str | None:
    """A model path or URI (as `check_path`), or a well-formed `finetunejob://NAME` reference."""
    value = _no_traversal(value)
    return None if value is None else check_reference(value)

# Metrics reported by graft.jobs every epoch, usable for tuning and checkpoint scoring.
METRICS: dict[str, Literal["min", "max"]] = {
    "eval_accuracy": "max",
    "eval_f1": "max",
    "eval_loss": "min",
    "train_loss": "min",
    # causal-lm: perplexity = exp(loss) over the completion tokens.
    "eval_perplexity": "min",
    "train_perplexity": "min",
}
# Metrics each task reports (a tuning or checkpoint metric must be one of its task's).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "text-classification": ("eval_accuracy", "eval_f1", "eval_loss", "train_loss"),
    "causal-lm": ("eval_loss", "eval_perplexity", "train_loss", "train_perplexity"),
}
MetricName = Literal["eval_accuracy", "eval_f1", "eval_loss", "train_loss", "eval_perplexity", "train_perplexity"]


class Task(StrEnum):
    TEXT_CLASSIFICATION = "text-classification"
    IMAGE_CLASSIFICATION = "image-classification"
    CAUSAL_LM = "causal-lm"


class Precision(str, Enum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class ModelSpec(ApiModel):
    """Where the pretrained weights come from.

    `source` forms: a local path or `file://` URI to a Hugging Face model directory; `hf://ORG/NAME`
    for a Hugging Face hub id; `finetunejob://NAME` for the model another job of the namespace
    trained (graft.api.references); `package://PYTHON_PACKAGE[/SUBPATH]` for weights shipped inside an
    installed Python package; any fsspec URI (`s3://`, `gs://`, `az://`, `https://`) to a model directory.
    """

    source: str = Field(
        min_length=1, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH,
        description="Path or URI of the pretrained model (see docs/spec.md).",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) for hf:// sources.")
    trust_remote_code: bool = Field(
        default=False, description="Allow custom model code from the hub (on Kubernetes only where a FineTunePolicy allows it)."
    )

    @field_validator("source")
    @classmethod
    def _safe_source(cls, value: str | None) -> str | None:
        return check_model_path(value)


class ValidationSplit(ApiModel):
    source: str | None = Field(
        default=None, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH, description="A separate validation file or URI."
    )
    fraction: float = Field(default=0.2, gt=0, lt=1, description="Held-out fraction when no source is given.")

    @field_validator("source")
    @classmethod
    def _safe_source(cls, value: str | None) -> str | None:
        return check_path(value)


def check_label_names(names: list[str] | None) -> list[str] | None:
    """Label names (when given) are at least two, non-empty and distinct."""
    if names is not None:
        if len(names) < 2:
            raise ValueError("list at least 2 label names")
        if any(not n for n in names):
            raise ValueError("label names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError("label names must be distinct")
    return names


# -- image classification (issue 10): preprocessing and augmentation ---------------------------


class NormalizeSpec(ApiModel):
    mean: list[float] = Field(min_length=1, max_length=3, description="Per-channel mean of pixel values scaled to 0..1.")
    std: list[float] = Field(min_length=1, max_length=3, description="Per-channel standard deviation (each > 0).")

    @model_validator(mode="after")
    def _shape(self) -> NormalizeSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one of each per channel (1 or 3)")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std value must be > 0")
        return self


class RandomResizedCropSpec(ApiModel):
    scale: list[float] = Field(default_factory=lambda: [0.6, 1.0], min_length=2, max_length=2, description="Area fraction range [min, max] of the crop.")
    ratio: list[float] = Field(default_factory=lambda: [0.75, 1.3333], min_length=2, max_length=2, description="Aspect ratio range [min, max].")

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCropSpec:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale [{lo}, {hi}] must satisfy 0 < min <= max <= 1")
        rlo, rhi = self.ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio [{rlo}, {rhi}] must satisfy 0 < min <= max")
        return self


class ColorJitterSpec(ApiModel):
    brightness: float = Field(default=0.0, ge=0, le=1, description="Brightness factor drawn from [1-b, 1+b].")
    contrast: float = Field(default=0.0, ge=0, le=1)
    saturation: float = Field(default=0.0, ge=0, le=1)
    hue: float = Field(default=0.0, ge=0, le=0.5, description="Hue shift drawn from [-h, h] (fraction of the colour wheel).")


class AugmentationSpec(ApiModel):
    """Random changes applied to training images only, drawn from the dataset seed, the epoch and the row."""

    random_resized_crop: RandomResizedCropSpec | None = Field(default_factory=RandomResizedCropSpec, description="null: resize only.")
    horizontal_flip: float = Field(default=0.5, ge=0, le=1, description="Probability of a left-right flip (0 for digits and text).")
    vertical_flip: float = Field(default=0.0, ge=0, le=1)
    rotation: float = Field(default=0.0, ge=0, le=180, description="Largest rotation, in degrees either way.")
    color_jitter: ColorJitterSpec | None = Field(default=None)


class DatasetSpec(ApiModel):
    source: str = Field(
        min_length=1, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH,
        description="Path or URI of the training data: jsonl, csv, parquet, a hub dataset hf://datasets/ORG/NAME; for images also a class-per-folder directory or an IDX file.",
    )
    format: Literal["auto", "jsonl", "csv", "parquet", "hub", "imagefolder", "idx"] = Field(default="auto")
    split: str = Field(default="train", description="Split name for hub datasets.")
    config: str | None = Field(default=None, description="Configuration (subset) name for hub datasets.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) for hub datasets.")
    text_field: str = Field(default="text", min_length=1)
    label_field: str = Field(default="label", min_length=1)
    label_names: list[str] | None = Field(default=None, description="Names of the labels, in label-id order.")
    filter: dict[str, str] | None = Field(default=None, description="Keep only rows whose field equals this value (as text).")
    max_samples: int | None = Field(default=None, ge=2, description="Sample this many rows (seeded) before splitting.")
    validation: ValidationSplit = Field(default_factory=ValidationSplit)
    seed: int = Field(default=42)
    # image classification
    image_field: str = Field(default="image", min_length=1, description="Table column holding an image path (relative to the table) or its bytes.")
    labels_source: str | None = Field(default=None, description="IDX labels file; default: the images file with images-idx3 replaced by labels-idx1.")
    image_size: int | None = Field(default=None, ge=8, le=2048, description="Square input size in pixels; default: the model's.")
    normalize: NormalizeSpec | None = Field(default=None, description="Input normalisation; default: the model's.")
    augmentation: AugmentationSpec | None = Field(default=None, description="Training-time image augmentation; absent: none.")
    # causal-lm: chat rows (`messages`, OpenAI chat format) or prompt/completion pairs.
    messages_field: str = Field(default="messages", min_length=1, description="causal-lm: column of OpenAI-format chat messages.")
    prompt_field: str = Field(default="prompt", min_length=1, description="causal-lm: prompt column (when there is no messages column).")
    completion_field: str = Field(default="completion", min_length=1, description="causal-lm: completion column (the tokens trained on).")

    @field_validator("label_names")
    @classmethod
    def _label_names(cls, names: list[str] | None) -> list[str] | None:
        return check_label_names(names)

    @field_validator("source")
    @classmethod
    def _safe_source(cls, value: str | None) -> str | None:
        return check_path(value)


class DeepSpeedSpec(ApiModel):
    enabled: bool = Field(default=True)
    zero_stage: Literal[0, 1, 2, 3] = Field(
        default=0, description="ZeRO stage. 0 (the default): no partitioning, several workers train with DDP; 1-3 partition optimizer "
        "state, gradients and (3) parameters across workers with DeepSpeed, for models that do not fit a worker otherwise.",
    )
    offload_optimizer: bool = Field(default=False, description="Offload optimizer state to CPU memory.")
    offload_parameters: bool = Field(default=False, description="Offload parameters to CPU memory (ZeRO-3 only).")

    @model_validator(mode="after")
    def _offload_needs_stage(self) -> DeepSpeedSpec:
        if self.offload_parameters and self.zero_stage != 3:
            raise ValueError("offloadParameters needs zeroStage: 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offloadOptimizer needs zeroStage 1, 2 or 3")
        return self


class LoraSpec(ApiModel):
    r: int = Field(default=8, ge=1, le=512)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(default=None, description="Module names to adapt; default: the model's attention projections.")


class EarlyStoppingSpec(ApiModel):
    patience: int = Field(default=2, ge=1, description="Epochs without improvement before a trial stops.")
    min_delta: float = Field(default=0.0, ge=0)


class TrainingSpec(ApiModel):
    epochs: int = Field(default=3, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=1, le=4096, description="Per-worker micro-batch size.")
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    max_seq_length: int = Field(default=128, ge=8, le=8192)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="Cap optimizer steps per epoch (smoke tests).")
    seed: int = Field(default=42)
    precision: Precision = Field(default=Precision.AUTO)
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    lora: LoraSpec | None = Field(default=None)
    freeze_base: bool = Field(default=False, description="Train the classification head only.")
    freeze_base_epochs: int | None = Field(
        default=None, ge=1, description="Train the head only for this many epochs, then the whole network (image classification)."
    )
    early_stopping: EarlyStoppingSpec | None = Field(default=None)
    # causal-lm: LoRA is on by default (merged into the weights on export); fullFineTune trains every weight.
    full_fine_tune: bool = Field(default=False, description="causal-lm: train every weight instead of LoRA (use ZeRO-3 for large models).")
    packing: bool = Field(default=True, description="causal-lm: pack several examples into each maxSeqLength row (else batch by length).")
    quantization: Literal["none", "4bit"] = Field(default="none", description="causal-lm: 4bit loads the base model in NF4 for QLoRA (GPU only).")
    max_failures: int = Field(
        default=1, ge=0, le=100,
        description="Worker-group failures a trial survives: Ray Train restarts the workers, which resume from the trial's latest checkpoint.",
    )

    @model_validator(mode="after")
    def _lora_or_freeze(self) -> TrainingSpec:
        if self.lora is not None and self.freeze_base:
            raise ValueError("choose either lora or freezeBase, not both")
        if self.freeze_base_epochs is not None and (self.freeze_base or self.lora is not None):
            raise ValueError("freezeBaseEpochs unfreezes the network later: do not combine it with freezeBase or lora")
        if self.full_fine_tune and (self.lora is not None or self.freeze_base):
            raise ValueError("fullFineTune trains every weight: drop lora and freezeBase, or drop fullFineTune")
        if self.quantization == "4bit" and self.full_fine_tune:
            raise ValueError("quantization: 4bit is QLoRA (LoRA on a frozen 4-bit base); it cannot be combined with fullFineTune")
        return self


# Set by the operator in a RayJob's runtime env: its worker pods are already sized by memoryPerWorker,
# so graft.jobs does not reserve that memory again as a Ray resource.
POD_SIZED_WORKERS_ENV = "GRAFT_POD_SIZED_WORKERS"
# Each worker pod of a RayJob advertises one of this Ray resource and each Train worker takes one,
# so workers land one per pod (a pod of 500m advertises 1 CPU: two 0.5-CPU workers would share
# one pod's memory limit).
WORKER_POD_RESOURCE = "graft_train_worker"


class ResourcesSpec(ApiModel):
    workers: int = Field(default=1, ge=1, le=1024)
    cpus_per_worker: float = Field(default=1, gt=0, le=512)
    gpus_per_worker: int = Field(default=0, ge=0, le=16)
    memory_per_worker: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description="Memory per worker, e.g. 4Gi.")


class SearchParameter(ApiModel):
    type: Literal["uniform", "loguniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = Field(default=None, json_schema_extra={"items": {"x-kubernetes-preserve-unknown-fields": True}})

    @model_validator(mode="after")
    def _shape(self) -> SearchParameter:
        if self.type == "choice":
            if not self.values:
                raise ValueError("type choice needs a non-empty values list")
            if self.low is not None or self.high is not None:
                raise ValueError("type choice takes values, not low/high")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low and high, not values")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs both low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("type loguniform needs low > 0")
        return self


# Training fields a search space may vary: wire (camelCase) name -> attribute path.
SEARCHABLE_FIELDS: dict[str, str] = {
    "learningRate": "learning_rate",
    "batchSize": "batch_size",
    "weightDecay": "weight_decay",
    "warmupRatio": "warmup_ratio",
    "epochs": "epochs",
    "gradientAccumulationSteps": "gradient_accumulation_steps",
    "lora.r": "lora.r",
    "lora.alpha": "lora.alpha",
    "lora.dropout": "lora.dropout",
}


SearchableField = Literal[
    "learningRate", "batchSize", "weightDecay", "warmupRatio", "epochs", "gradientAccumulationSteps",
    "lora.r", "lora.alpha", "lora.dropout",
]


class SchedulerSpec(ApiModel):
    type: Literal["asha", "fifo"] = Field(default="asha")
    grace_period: int = Field(default=1, ge=1, description="ASHA: epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(default=2, gt=1, description="ASHA: keep 1/reductionFactor of trials at each rung.")


class TuningSpec(ApiModel):
    metric: MetricName = Field(default="eval_accuracy", description="causal-lm jobs use eval_loss or eval_perplexity.")
    mode: Literal["max", "min"] | None = Field(default=None, description="Defaults to the metric's natural direction.")
    num_trials: int = Field(default=1, ge=1, le=10000)
    max_concurrent_trials: int = Field(default=1, ge=1, le=1000)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search_algorithm: Literal["random", "optuna"] = Field(default="random")
    search_space: dict[SearchableField, SearchParameter] = Field(
        default_factory=dict, description="Training fields to search over, e.g. learningRate."
    )

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        return self.mode or METRICS[self.metric]


class CheckpointSpec(ApiModel):
    storage: str | None = Field(
        default=None, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH,
        description="Path or URI for checkpoints and the exported model (default: the run directory).",
    )
    num_to_keep: int = Field(default=2, ge=1, le=100)
    frequency: int = Field(default=1, ge=1, le=1000, description="Checkpoint every N epochs (and at the last epoch); resume restarts from the latest.")
    score_metric: MetricName | None = Field(
        default=None, description="Defaults to tuning.metric."
    )

    @field_validator("storage")
    @classmethod
    def _safe_storage(cls, value: str | None) -> str | None:
        return check_path(value)


class ServingResources(ApiModel):
    cpus: float = Field(default=1, gt=0, le=512)
    gpus: float = Field(default=0, ge=0, le=16)
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)


class BatchingSpec(ApiModel):
    max_batch_size: int = Field(default=8, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.02, ge=0, le=10)


# Upper bound of serving.maxTextLength: keeps the largest accepted request body bounded.
MAX_TEXT_LENGTH = 200_000


class ServingSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must be <= maxReplicas"}
            ]
        }
    }

    enabled: bool = Field(default=True)
    endpoint: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63, description="ModelEndpoint to promote the best model to.")
    promotion: Literal["always", "ifBetter", "manual"] = Field(default="ifBetter")
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float | None = Field(
        default=None, gt=0, le=10000,
        description="Serve autoscaling target per replica; default: batching.maxBatchSize (a replica is busy when one full batch is in flight).",
    )
    upscale_delay_seconds: float | None = Field(
        default=None, ge=0, le=3600,
        description="How long load must stay above the target before Serve adds replicas (default: Serve's, 30 s).",
    )
    downscale_delay_seconds: float | None = Field(
        default=None, ge=0, le=86400,
        description="How long load must stay below the target before Serve removes replicas (default: Serve's, 600 s).",
    )
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, le=100000,
        description="Requests one replica holds at once (Serve's max_ongoing_requests); default: 64, or 4 x batching.maxBatchSize "
        "if larger. Requests beyond it wait in Serve's router, which retries with backoff: keep it above the concurrency a replica sees.",
    )
    resources: ServingResources = Field(default_factory=ServingResources)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    max_text_length: int = Field(default=20000, ge=1, le=MAX_TEXT_LENGTH, description="Longest accepted input text, in characters.")
    max_image_bytes: int = Field(default=10_000_000, ge=1024, le=200_000_000, description="Largest accepted image, in bytes (image-classification).")
    max_image_pixels: int = Field(
        default=16_777_216, ge=1, le=80_000_000,
        description="Most pixels (width x height) of one image, checked on its header before decoding (image-classification).",
    )
    max_pixels_per_request: int = Field(
        default=33_554_432, ge=1, le=400_000_000,
        description="Most pixels of all the images of one request together, checked before any is decoded (image-classification).",
    )
    max_tokens: int = Field(default=512, ge=1, le=32768, description="causal-lm: most tokens one request may generate.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="Inference weights: auto = bf16 on GPUs that support it, fp32 on CPUs (text classification)."
    )

    @property
    def autoscaling_target(self) -> float:
        """targetOngoingRequests, defaulting to the batch size."""
        return self.target_ongoing_requests or float(self.batching.max_batch_size)

    @model_validator(mode="after")
    def _replicas(self) -> ServingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})")
        return self


class DistillationSpec(ApiModel):
    """Train `spec.model` (the student) to match a fine-tuned teacher's softened predictions."""

    teacher: str = Field(
        min_length=1, max_length=MAX_URI_LENGTH, json_schema_extra=SAFE_PATH,
        description="The teacher: finetunejob://NAME (a job of this namespace), a Graft result.json (path or URI) or an exported model directory.",
    )
    student_layers: int | None = Field(
        default=None, ge=1, le=256, description="Keep this many layers (encoder layers or network blocks) of spec.model; absent: spec.model as it is."
    )
    temperature: float = Field(default=2.0, gt=0, le=100, description="Softmax temperature of both models' logits in the soft-target loss.")
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the soft-target loss; 1 - alpha goes to the labels' cross-entropy.")

    @field_validator("teacher")
    @classmethod
    def _safe_teacher(cls, value: str) -> str:
        checked = check_model_path(value)
        assert checked is not None
        return checked


class ClusterRef(ApiModel):
    """A long-lived Ray cluster to run on instead of a per-job RayJob cluster."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.name) != has(self.address)", "message": "set exactly one of name or address"}
            ]
        }
    }

    name: str | None = Field(default=None, pattern=NAME_PATTERN, description="A KubeRay RayCluster in the job's namespace.")
    address: str | None = Field(
        default=None, max_length=300, pattern=CLUSTER_ADDRESS_PATTERN,
        description="A Ray dashboard address [http[s]://]HOST[:PORT], e.g. http://ray-head.team-a.svc:8265 "
        "(no user, path, query or fragment; on Kubernetes a FineTunePolicy decides which are allowed).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ClusterRef:
        if (self.name is None) == (self.address is None):
            raise ValueError("set exactly one of name or address")
        return self


DEFAULT_TTL_SECONDS = 300


class SecretKeySelector(ApiModel):
    """One key of a Secret in the job's namespace (the operator never reads it: the pods do)."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN, description="Secret name.")
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN, description="Key in the Secret.")
    optional: bool = Field(default=False, description="Start without the variable when the Secret or key is missing.")


class SecretEnvVar(ApiModel):
    """An environment variable whose value comes from a Secret (credentials for models, data, storage)."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN, description="Environment variable name.")
    secret_key_ref: SecretKeySelector

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        problem = reserved_env_problem(name)  # credential-like names are what this is for
        if problem:
            raise ValueError(problem)
        return name


class SecretEnvSource(ApiModel):
    """A whole Secret as environment (envFrom): no longer accepted; name each key in secretEnv."""

    name: str = Field(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN, description="Secret name.")
    optional: bool = Field(default=False)


# Whole Secrets put every key in the pod env (LD_PRELOAD, PYTHONPATH, GRAFT_* included): refused by the
# CRD and the model, kept in the schema only to say what to write instead.
ENV_FROM_SECRETS_REMOVED = (
    "whole Secrets no longer enter the pod env (any key in them would, LD_PRELOAD included); name each key "
    "instead: secretEnv: [{name: HF_TOKEN, secretKeyRef: {name: SECRET, key: KEY}}]"
)
NO_ENV_FROM: dict[str, Any] = {
    "x-kubernetes-validations": [{"rule": "size(self) == 0", "message": ENV_FROM_SECRETS_REMOVED}]
}


def refuse_env_from(value: list[SecretEnvSource]) -> list[SecretEnvSource]:
    if value:
        raise ValueError(ENV_FROM_SECRETS_REMOVED)
    return value




class RuntimeSpec(ApiModel):
    image: str | None = Field(default=None, description="Ray image with graft installed (default: the operator's setting).")
    cluster: ClusterRef | None = Field(default=None, description="Run on a shared Ray cluster instead of a per-job RayJob.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description=f"Delete the RayJob this long after it finishes (default {DEFAULT_TTL_SECONDS}, or the policy's default); "
        "its Ray cluster is deleted within 60 s of the end, once the job's log is copied."
    )
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    backoff_limit: int = Field(default=0, ge=0, le=10, description="Retries of a failed RayJob.")
    queue_name: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=NAME_PATTERN,
        description="Kueue LocalQueue to admit the job through (a LocalQueue name; omit the field for none).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for the training job (on Kubernetes: only allowlisted keys, "
        "none reserved and no credentials, see docs/tenancy.md; reference Secrets with secretEnv).",
    )
    secret_env: list[SecretEnvVar] = Field(
        default_factory=list, max_length=100,
        description="Environment variables from Secrets in the job's namespace (RayJob pods only; never copied anywhere).",
    )
    env_from_secrets: list[SecretEnvSource] = Field(
        default_factory=list, max_length=20, json_schema_extra=NO_ENV_FROM,
        description="No longer accepted (must be empty): name each key in secretEnv instead.",
    )

    _no_env_from = field_validator("env_from_secrets")(refuse_env_from)

    @property
    def ttl_after_finished(self) -> int:
        """The TTL in force: the spec's, else the built-in default (policies fill the field first)."""
        return DEFAULT_TTL_SECONDS if self.ttl_seconds_after_finished is None else self.ttl_seconds_after_finished


class FineTuneJobSpec(ApiModel):
    task: Task = Field(default=Task.TEXT_CLASSIFICATION)
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    distillation: DistillationSpec | None = Field(default=None, description="Distil a fine-tuned teacher into spec.model (classification tasks).")
    suspend: bool = Field(default=False, description="Stop (or hold) the job's Ray work while true.")

    @model_validator(mode="after")
    def _task_fields(self) -> FineTuneJobSpec:
        """Metrics must be ones the task reports; causal-lm gets LoRA unless fullFineTune or freezeBase."""
        reported = TASK_METRICS.get(str(self.task))
        if reported is not None:
            for where, name in (("tuning.metric", self.tuning.metric), ("checkpoints.scoreMetric", self.checkpoints.score_metric)):
                if name is not None and name not in reported:
                    raise ValueError(f"{where}: task {self.task} reports {', '.join(reported)}, not {name}; set {where}: {reported[0]}")
        if self.task == Task.CAUSAL_LM:
            t = self.training
            if t.freeze_base:
                raise ValueError("training.freezeBase trains a classification head only; causal-lm has none: use lora (the default) or fullFineTune")
            if t.lora is None and not t.full_fine_tune:
                t.lora = LoraSpec()
        elif self.training.quantization != "none" or self.training.full_fine_tune:
            raise ValueError("training.quantization and training.fullFineTune are causal-lm settings; drop them for this task")
        return self

    def sources(self) -> list[tuple[str, str, Literal["model", "dataset"]]]:
        """(field path, value, kind) of every set source a job reads: the model, the distillation
        teacher (a model too), the dataset, its IDX labels file and its validation file. One list for
        every check of them (admission, policy, the job's own partition check)."""
        out: list[tuple[str, str, Literal["model", "dataset"]]] = [("spec.model.source", self.model.source, "model")]
        if self.distillation is not None:
            out.append(("spec.distillation.teacher", self.distillation.teacher, "model"))
        out.append(("spec.dataset.source", self.dataset.source, "dataset"))
        if self.dataset.labels_source is not None:
            out.append(("spec.dataset.labelsSource", self.dataset.labels_source, "dataset"))
        if self.dataset.validation.source is not None:
            out.append(("spec.dataset.validation.source", self.dataset.validation.source, "dataset"))
        return out

    @property
    def score_metric(self) -> str:
        return self.checkpoints.score_metric or self.tuning.metric

    @property
    def score_mode(self) -> Literal["max", "min"]:
        return METRICS[self.score_metric] if self.checkpoints.score_metric else self.tuning.resolved_mode


class ObjectMeta(ApiModel):
    """The part of Kubernetes metadata Graft reads; everything else is kept but ignored."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)] = "finetune"
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    def uid_or_empty(self) -> str:
        """metadata.uid as the API server set it; empty for an object that was never stored."""
        return str((self.model_extra or {}).get("uid") or "")


class FineTuneJob(ApiModel):
    api_version: Literal["graft.dev/v1alpha1"] = Field(default=GROUP_VERSION)
    kind: Literal["FineTuneJob"] = Field(default="FineTuneJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FineTuneJobSpec

    @model_validator(mode="after")
    def _no_self_reference(self) -> FineTuneJob:
        for path, name in references(self.spec).items():
            if name == self.metadata.name:
                raise ValueError(f"{path}: {REFERENCE_SCHEME}{name} is this job itself; name the job whose model it starts from")
        return self
