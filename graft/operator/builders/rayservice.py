"""ModelEndpoint -> KubeRay `ray.io/v1` RayService running `graft.serving.app:build_app`."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from graft.api.endpoint import BEARER_TOKEN_ENV, EndpointAuth, ModelEndpoint
from graft.operator.builders.common import cpu_quantity, pod_template, resources, with_namespace_storage, worker_group
from graft.operator.builders.secrets import with_secret_env
from graft.operator.names import ANNOTATION_MODEL_VERSION, endpoint_labels, owner_reference, ray_name
from graft.operator.rayauth import auth_options
from graft.operator.settings import OperatorSettings
from graft.serving.args import ServeArgs, serve_config

SERVE_GROUP = "serve"


def _meta(endpoint: ModelEndpoint) -> tuple[str, str, str]:
    extra = endpoint.metadata.model_extra or {}
    if not endpoint.metadata.namespace:
        raise ValueError(f"ModelEndpoint {endpoint.metadata.name!r} has no metadata.namespace")
    return endpoint.metadata.name, endpoint.metadata.namespace, str(extra.get("uid") or "")


def build_serve_config(endpoint: ModelEndpoint, settings: OperatorSettings) -> dict[str, Any]:
    """The Serve config document (serveConfigV2): one application serving the promoted model."""
    name, _, _ = _meta(endpoint)
    spec = endpoint.spec
    args = ServeArgs.from_serving(
        spec.model.uri, spec.serving, model_version=spec.model.version, max_seq_length=spec.model.max_seq_length,
        trust_remote_code=spec.model.trust_remote_code, served_model_name=endpoint.metadata.name, task=spec.model.task,
        require_bearer_token=spec.auth is not None,
    )
    app = serve_config(args, app_name=name, route_prefix="/", serving=spec.serving, env=dict(settings.serve_env))
    return {"applications": [app]}


def _cluster_config(endpoint: ModelEndpoint, settings: OperatorSettings) -> dict[str, Any]:
    name, _, _ = _meta(endpoint)
    serving = endpoint.spec.serving
    image = endpoint.spec.image or settings.ray_image
    labels = endpoint_labels(name)
    # A Serve worker pod is sized as one replica asks (fractions of a core too: KubeRay gives the
    # pod's Ray the ceiling, e.g. 500m -> 1 logical CPU); the Ray autoscaler adds pods as Serve adds
    # replicas that do not fit.
    pod_cpu = cpu_quantity(serving.resources.cpus)
    worker = worker_group(
        SERVE_GROUP,
        replicas=serving.min_replicas,
        min_replicas=serving.min_replicas,
        max_replicas=serving.max_replicas,
        image=image,
        settings=settings,
        container_resources=resources(pod_cpu, serving.resources.memory or settings.serve_memory, serving.resources.gpus),
        labels=labels,
    )
    head = {
        # No replicas on the head: it keeps the GCS, the dashboard and the Serve controller.
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": pod_template(
            container_name="ray-head",
            image=image,
            settings=settings,
            container_resources=resources(settings.head_cpu, settings.head_memory, cpu_limit=settings.head_cpu_limit),
            labels=labels,
            ports=[
                {"name": "gcs", "containerPort": 6379},
                {"name": "dashboard", "containerPort": 8265},
                {"name": "client", "containerPort": 10001},
                {"name": "serve", "containerPort": settings.serve_port},
            ],
        ),
    }
    return {
        "rayVersion": settings.ray_version,
        "authOptions": auth_options(ray_name(name)),  # Ray token authentication (graft.operator.rayauth)
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 60,
            # KubeRay's default sidecar asks 500m; polling the cluster needs far less.
            "resources": resources(settings.autoscaler_cpu, settings.autoscaler_memory),
        },
        "headGroupSpec": head,
        "workerGroupSpecs": [worker],
    }


def with_token_env(cluster_spec: dict[str, Any], auth: EndpointAuth | None) -> dict[str, Any]:
    """A copy of a RayCluster spec whose every Ray container gets the endpoint's bearer token as
    `BEARER_TOKEN_ENV` through a secretKeyRef (a reference only: the kubelet reads the Secret; a
    missing Secret or key keeps the pods from starting instead of serving without a token)."""
    if auth is None:
        return cluster_spec
    ref = auth.bearer_token_secret
    out = copy.deepcopy(cluster_spec)
    for group in [out["headGroupSpec"], *out["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            entry = {"name": BEARER_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": False}}}
            container["env"] = [*(container.get("env") or []), entry]
    return out


def build_rayservice(endpoint: ModelEndpoint, settings: OperatorSettings) -> dict[str, Any]:
    """The RayService of an endpoint, owned by it. A promotion changes only `serveConfigV2` (the
    model URI and version in the app's args), which KubeRay applies in place; a change of the
    cluster shape rolls out on a new cluster first (`upgradeStrategy: NewCluster`, zero downtime)."""
    name, namespace, uid = _meta(endpoint)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": ray_name(name),
            "namespace": namespace,
            "labels": endpoint_labels(name),
            "annotations": {ANNOTATION_MODEL_VERSION: str(endpoint.spec.model.version)},
            "ownerReferences": [owner_reference(endpoint.api_version, endpoint.kind, name, uid)],
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(build_serve_config(endpoint, settings), sort_keys=False),
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterConfig": with_namespace_storage(with_token_env(with_secret_env(  # references only: the kubelet reads the Secrets
                _cluster_config(endpoint, settings), endpoint.spec.secret_env), endpoint.spec.auth), namespace, settings),
        },
    }
