"""Shared execution mode: FineTuneJobs and ModelEndpoints on a long-lived Ray cluster.

`spec.runtime.cluster` (FineTuneJob) or `spec.cluster` (ModelEndpoint) names a KubeRay RayCluster
in the object's namespace or gives a Ray dashboard address. Training is submitted through Ray's
Job Submission API (`jobs`), serving is deployed through Serve's declarative REST API (`serve`),
and every name on the cluster is derived from namespace and name (`naming`) so tenants do not
collide. `graft.operator.backends.shared` builds the backends on these.
"""

from graft.operator.shared.naming import app_name, dashboard_url, route_prefix, submission_id

__all__ = ["app_name", "dashboard_url", "route_prefix", "submission_id"]
