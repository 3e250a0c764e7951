"""The NetworkPolicy of each Ray cluster Graft creates: who may reach its pods.

One policy per RayJob/RayService, created by the operator before the cluster and owned by the
FineTuneJob/ModelEndpoint. It selects the cluster's pods (Graft's label on every Ray pod) and admits
ingress only from

* the cluster's own pods (head <-> workers: GCS, raylets, object transfer),
* KubeRay's submitter pod of the RayJob (K8sJobMode: `ray job submit` against the dashboard),
* the peers of `OperatorSettings.ray_ingress_from`: the Graft operator and the KubeRay operator
  (the chart fills them in),
* anyone on the Serve port of a RayService (the endpoint's clients, as before).

Everything else (a pod of another namespace above all) is dropped by a CNI that enforces
NetworkPolicy. Token authentication (graft.operator.rayauth) refuses it in any case.
"""

from __future__ import annotations

from typing import Any

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # on the pods of KubeRay's submitter Job (named as the RayJob)
POLICY_SUFFIX = "-ray-ingress"


def policy_name(ray_name: str) -> str:
    return f"{ray_name}{POLICY_SUFFIX}"


def ray_network_policy(
    *,
    namespace: str,
    ray_name: str,
    owner: dict[str, object],
    labels: dict[str, str],
    pod_selector: dict[str, str],
    peers: list[dict[str, Any]],
    serve_port: int | None = None,
    submitter: bool = False,
) -> dict[str, Any]:
    """The NetworkPolicy of the cluster whose pods carry `pod_selector` (a RayJob's: `submitter`
    admits its submitter pod; a RayService's: `serve_port` stays open to all)."""
    own = [{"podSelector": {"matchLabels": dict(pod_selector)}}]
    if submitter:
        own.append({"podSelector": {"matchLabels": {JOB_NAME_LABEL: ray_name}}})
    ingress: list[dict[str, Any]] = [{"from": own}]
    if peers:
        ingress.append({"from": [dict(p) for p in peers]})
    if serve_port is not None:
        ingress.append({"ports": [{"port": serve_port, "protocol": "TCP"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(ray_name),
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [owner],
        },
        "spec": {
            "podSelector": {"matchLabels": dict(pod_selector)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
