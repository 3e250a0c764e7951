"""Graft's typed API: the FineTuneJob and ModelEndpoint models, their status and the result document."""

from graft.api.base import API_GROUP, API_VERSION, GROUP_VERSION
from graft.api.endpoint import ModelEndpoint, ModelEndpointSpec, ModelEndpointStatus
from graft.api.errors import FieldError, SpecError
from graft.api.load import load_job, parse_object, parse_spec, read_documents
from graft.api.result import TrainingResult, TrialRecord
from graft.api.spec import FineTuneJob, FineTuneJobSpec
from graft.api.status import FineTuneJobStatus, Phase

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "FieldError",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "ModelEndpoint",
    "ModelEndpointSpec",
    "ModelEndpointStatus",
    "Phase",
    "SpecError",
    "TrainingResult",
    "TrialRecord",
    "load_job",
    "parse_object",
    "parse_spec",
    "read_documents",
]
