"""Pure builders: typed spec + operator settings in, Kubernetes object dict out. No I/O."""

from graft.operator.builders.endpoint import build_endpoint, build_promoted_model
from graft.operator.builders.rayjob import build_rayjob, entrypoint
from graft.operator.builders.rayservice import build_rayservice, build_serve_config

__all__ = [
    "build_endpoint",
    "build_promoted_model",
    "build_rayjob",
    "build_rayservice",
    "build_serve_config",
    "entrypoint",
]
