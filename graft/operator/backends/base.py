"""What the loop needs from a place that runs training (JobBackend) or serving (EndpointBackend).

Two implementations each: KubeRay objects (`rayjob.py`: a RayJob per FineTuneJob, a RayService
per ModelEndpoint) and a long-lived Ray cluster (`shared.py`: Ray's Job Submission API and
Serve's REST API). Backends never write status: they act and return typed observations, which
`graft.operator.status` turns into status. Nothing here imports kopf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.api.status import FineTuneJobStatus
from graft.operator.result import ResultSource


class RunState(str, Enum):
    ABSENT = "Absent"  # nothing created or submitted yet
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"  # the Ray job succeeded: its result decides the phase
    FAILED = "Failed"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object (Normal or Warning)."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class RunObservation:
    """One look at the Ray work of a FineTuneJob."""

    state: RunState
    reason: str = ""
    message: str = ""
    ray_job_name: str | None = None  # the RayJob (RayJob backend)
    cluster_name: str | None = None
    submission_id: str | None = None
    dashboard_url: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    log_uri: str | None = None  # where the finished job's log was copied (shared clusters)


@dataclass(frozen=True)
class Step:
    """What `act` did: the observation after acting, Events to post, and when to look again."""

    obs: RunObservation
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


class JobBackend(Protocol):
    def observe(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> RunObservation:
        """The Ray work as it is now (the RayJob backend reads its cache: no API call)."""

    def starts_work(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> bool:
        """Whether `act` would start Ray work (create, resume, re-create, submit): admission runs first."""

    def act(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> Step:
        """Create, suspend, resume or submit as the spec asks."""

    def result_source(self, job: FineTuneJob, obs: RunObservation) -> ResultSource:
        """Where the finished job's result document is."""

    def collect(self, job: FineTuneJob, status: FineTuneJobStatus) -> bool:
        """After the TTL of a finished job: delete what held its cluster; True once nothing is left."""

    def cleanup(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> bool:
        """The FineTuneJob is being deleted: stop its Ray work; True once nothing runs."""


@dataclass(frozen=True)
class ServeObservation:
    """One look at the serving side of a ModelEndpoint."""

    exists: bool  # the RayService / Serve application exists
    ready: bool = False  # some version answers requests
    app_status: str = ""  # Serve's application status (RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, ...)
    reason: str = ""
    message: str = ""
    replicas: int = 0
    served_version: int | None = None  # the model version deployed and answering (None: unknown)
    url: str | None = None
    ray_service_name: str | None = None
    application: str = ""
    events: tuple[Event, ...] = ()


class EndpointBackend(Protocol):
    def apply(self, endpoint: ModelEndpoint) -> ServeObservation:
        """Create or update the serving side to match the spec; return how it looks."""

    def url(self, namespace: str, name: str, cluster_dashboard: str | None) -> str:
        """The URL an endpoint answers on (for a promoting job's status)."""

    def cleanup(self, endpoint: ModelEndpoint) -> bool:
        """The endpoint is being deleted: remove what Kubernetes GC does not; True once done."""
