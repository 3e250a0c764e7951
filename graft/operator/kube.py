"""Every Kubernetes API call of the operator, in one small module (sync client, called from
kopf's handler threads). Create calls use strict field validation so a builder that emits a field
the real CRD does not have fails loudly instead of being pruned."""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from typing import Any, cast

import kubernetes
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi, NetworkingV1Api

from graft.api.base import API_GROUP, API_VERSION
from graft.operator.metrics import METRICS

FIELD_MANAGER = "graft-operator"
log = logging.getLogger("graft.operator")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str


FINETUNEJOBS = Kind(API_GROUP, API_VERSION, "finetunejobs")
MODELENDPOINTS = Kind(API_GROUP, API_VERSION, "modelendpoints")
FINETUNEPOLICIES = Kind(API_GROUP, API_VERSION, "finetunepolicies")
RAYJOBS = Kind("ray.io", "v1", "rayjobs")
RAYSERVICES = Kind("ray.io", "v1", "rayservices")
PODS = Kind("", "v1", "pods")  # watched, never listed per reconcile: the Ray pods of Graft's RayJobs


def api_client(kubeconfig: str | None = None, pool_size: int = 32) -> ApiClient:
    """A client for the given kubeconfig, else in-cluster, else the default kubeconfig."""
    config = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
    config.connection_pool_maxsize = pool_size
    return ApiClient(config)


class Kube:
    """Thin typed wrappers; a 404 on get returns None, a 409 on create returns the existing object."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.custom = CustomObjectsApi(client)
        self.core = CoreV1Api(client)

    # --------------------------------------------------------------- custom objects
    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        METRICS.record_api("get", kind.plural)
        try:
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        METRICS.record_api("list", kind.plural)
        if namespace is None:
            out = self.custom.list_cluster_custom_object(kind.group, kind.version, kind.plural, **kw)
        else:
            out = self.custom.list_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, **kw)
        return list(cast(dict[str, Any], out).get("items", []))

    def create(self, kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create `body` (strict field validation); returns (object, created). Idempotent."""
        ns = body["metadata"]["namespace"]
        METRICS.record_api("create", kind.plural)
        try:
            obj = self.custom.create_namespaced_custom_object(
                kind.group, kind.version, ns, kind.plural, body, field_manager=FIELD_MANAGER, field_validation="Strict"
            )
            return cast(dict[str, Any], obj), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get(kind, ns, body["metadata"]["name"])
        if existing is None:  # deleted in between: let the caller retry
            raise kubernetes.client.ApiException(status=409, reason=f"{kind.plural}/{body['metadata']['name']} is being deleted")
        return existing, False

    def patch(self, kind: Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (a resourceVersion in patch.metadata makes it conditional: 409 on conflict)."""
        METRICS.record_api("patch", kind.plural)
        return cast(dict[str, Any], self.custom.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name, patch,
            field_manager=FIELD_MANAGER, field_validation="Strict", _content_type="application/merge-patch+json",
        ))

    def patch_status(self, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        METRICS.record_api("patch", f"{kind.plural}/status")
        try:
            return cast(dict[str, Any], self.custom.patch_namespaced_custom_object_status(
                kind.group, kind.version, namespace, kind.plural, name, {"status": status},
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json",
            ))
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile
                return None
            raise

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        METRICS.record_api("delete", kind.plural)
        try:
            self.custom.delete_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name, propagation_policy="Background"
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # --------------------------------------------------------------- core objects
    def create_secret(self, body: dict[str, Any]) -> bool:
        """Create a Secret; False when one of that name exists already. The operator only ever
        creates Secrets (the Ray token Secrets of graft.operator.rayauth): it cannot read any."""
        METRICS.record_api("create", "secrets")
        try:
            self.core.create_namespaced_secret(body["metadata"]["namespace"], body)  # type: ignore[arg-type]  # a dict body is accepted
        except ApiException as exc:
            if exc.status != 409:
                raise
            return False
        return True

    def create_generated_secret(self, body: dict[str, Any]) -> str:
        """Create a Secret named by the API server from `metadata.generateName`; its name (the
        per-job state key of graft.operator.builders.statekey: created, never read)."""
        METRICS.record_api("create", "secrets")
        created = self.core.create_namespaced_secret(body["metadata"]["namespace"], body)  # type: ignore[arg-type]  # a dict body is accepted
        assert created.metadata is not None  # the API server returns the object it created
        return str(created.metadata.name)

    def create_network_policy(self, body: dict[str, Any]) -> bool:
        """Create a NetworkPolicy (a Ray cluster's, graft.operator.builders.netpol); False when one of
        that name exists already."""
        METRICS.record_api("create", "networkpolicies")
        try:
            NetworkingV1Api(self.client).create_namespaced_network_policy(body["metadata"]["namespace"], body)  # type: ignore[arg-type]  # a dict body is accepted
        except ApiException as exc:
            if exc.status != 409:
                raise
            return False
        return True

    def create_event(self, body: dict[str, Any]) -> None:
        METRICS.record_api("create", "events")
        self.core.create_namespaced_event(body["metadata"]["namespace"], body)  # type: ignore[arg-type]  # a dict body is accepted

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        METRICS.record_api("get", "namespaces")
        ns = self.core.read_namespace(namespace)
        return dict((ns.metadata.labels if ns.metadata else None) or {})

    def list_policies(self) -> builtins.list[dict[str, Any]]:
        """All FineTunePolicies; none when the CRD is not installed."""
        try:
            return self.list(FINETUNEPOLICIES)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
