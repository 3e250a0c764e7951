"""Names and addresses on a shared Ray cluster, derived from Kubernetes namespace and name.

Namespaces and Graft object names are DNS labels (no dots), so a dot joins them without
ambiguity: two tenants with a job or endpoint of the same name never share a Ray job, a Serve
application or a route.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from graft.api.spec import ClusterRef
from graft.operator.settings import OperatorSettings

SUBMISSION_PREFIX = "graft"


def submission_id(namespace: str, name: str, uid: str, attempt: int = 0) -> str:
    """The Ray job submission id of a FineTuneJob run: `graft.<ns>.<name>.<uid8>[.<attempt>]`.

    The uid keeps a re-created job of the same name from colliding with its predecessor (Ray never
    reuses a submission id); `attempt` counts re-submissions after a suspension."""
    if not uid:
        raise ValueError(f"FineTuneJob {namespace}/{name} has no metadata.uid")
    base = f"{SUBMISSION_PREFIX}.{namespace}.{name}.{uid[:8]}"
    return base if attempt == 0 else f"{base}.{attempt}"


def attempt_of(submission: str | None, namespace: str, name: str, uid: str) -> int | None:
    """The attempt number encoded in `submission` (None when it is not this job's id)."""
    if not submission or not uid:
        return None
    base = submission_id(namespace, name, uid)
    if submission == base:
        return 0
    head, _, tail = submission.rpartition(".")
    if head == base and tail.isdigit():
        return int(tail)
    return None


def app_name(namespace: str, name: str) -> str:
    """The Serve application of a ModelEndpoint: `<namespace>.<name>`."""
    return f"{namespace}.{name}"


def route_prefix(namespace: str, name: str) -> str:
    """The HTTP route of a ModelEndpoint on the shared Serve proxy: `/<namespace>/<name>`."""
    return f"/{namespace}/{name}"


def dashboard_url(cluster: ClusterRef, namespace: str, settings: OperatorSettings) -> str:
    """The Ray dashboard (Job Submission and Serve REST APIs) of a cluster reference.

    `address` is used as given (`http://` added when it has no scheme); `name` is a KubeRay
    RayCluster in `namespace`, reached through its head Service (settings.shared_dashboard_url)."""
    if cluster.address:
        address = cluster.address.strip()
        url = address if "://" in address else f"http://{address}"
    elif cluster.name:
        url = settings.shared_dashboard_url.format(name=cluster.name, namespace=namespace)
    else:  # ClusterRef validation makes this unreachable
        raise ValueError("spec cluster reference needs name or address")
    return url.rstrip("/")


def serve_url(dashboard: str, http_port: int, route: str) -> str:
    """The URL of a Serve application: the dashboard's host, Serve's HTTP port, the route prefix."""
    parts = urlsplit(dashboard)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return urlunsplit((parts.scheme or "http", f"{host}:{http_port}", route, "", ""))
