"""An in-memory stand-in for `graft.operator.kube.Kube`, for driving the controller in unit tests.

It keeps objects by kind, bumps resourceVersion on every write, applies merge patches, refuses
a stale resourceVersion with 409 like the API server, and records every call, so tests can assert
how many reads and writes a reconcile costs. Watch events are delivered by the test
(`deliver`), the way kopf would deliver them.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import Counter
from typing import Any

from kubernetes.client import ApiException

from graft.operator import kube as k

READS = ("get", "list", "namespace_labels")
WRITES = ("create", "create_secret", "create_network_policy", "create_generated_secret", "patch", "patch_status", "delete", "create_event")


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeKube:
    def __init__(self, namespace_labels: dict[str, dict[str, str]] | None = None) -> None:
        self.objects: dict[tuple[k.Kind, str, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name): created, never read back
        self.network_policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.labels = namespace_labels or {}
        self._rv = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ test side
    def reads(self) -> int:
        return sum(self.calls[c] for c in READS)

    def writes(self, *, events: bool = False) -> int:
        return sum(self.calls[c] for c in WRITES if events or c != "create_event")

    def reset_calls(self) -> None:
        self.calls.clear()

    def seed(self, kind: k.Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a user (or KubeRay) would, outside the operator's accounting."""
        with self._lock:
            obj = copy.deepcopy(obj)
            md = obj.setdefault("metadata", {})
            md.setdefault("namespace", "")
            md.setdefault("uid", uuid.uuid4().hex)
            md["generation"] = 1
            md["resourceVersion"] = self._bump()
            self.objects[(kind, md["namespace"], md["name"])] = obj
            return copy.deepcopy(obj)

    def set_status(self, kind: k.Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write status as KubeRay would."""
        with self._lock:
            obj = self.objects[(kind, namespace, name)]
            obj["status"] = merge(obj.get("status") or {}, status)
            obj["metadata"]["resourceVersion"] = self._bump()
            return copy.deepcopy(obj)

    def find(self, kind: k.Kind, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, kind: k.Kind) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kd, _, _), o in self.objects.items() if kd == kind]

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    # ------------------------------------------------------------------ Kube interface
    def get(self, kind: k.Kind, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["get"] += 1
        return self.find(kind, namespace, name)

    def list(self, kind: k.Kind, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        self.calls["list"] += 1
        return [o for o in self.all(kind) if namespace is None or o["metadata"]["namespace"] == namespace]

    def list_policies(self) -> list[dict[str, Any]]:
        return self.list(k.FINETUNEPOLICIES)

    def create(self, kind: k.Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls["create"] += 1
        md = body["metadata"]
        with self._lock:
            key = (kind, md["namespace"], md["name"])
            if key in self.objects:
                return copy.deepcopy(self.objects[key]), False
        return self.seed(kind, body), True

    def create_secret(self, body: dict[str, Any]) -> bool:
        self.calls["create_secret"] += 1
        md = body["metadata"]
        with self._lock:
            if (md["namespace"], md["name"]) in self.secrets:
                return False
            self.secrets[(md["namespace"], md["name"])] = copy.deepcopy(body)
        return True

    def create_generated_secret(self, body: dict[str, Any]) -> str:
        self.calls["create_generated_secret"] += 1
        md = body["metadata"]
        name = f"{md['generateName']}{uuid.uuid4().hex[:5]}"
        with self._lock:
            self.secrets[(md["namespace"], name)] = {**copy.deepcopy(body), "metadata": {**copy.deepcopy(md), "name": name}}
        return name

    def create_network_policy(self, body: dict[str, Any]) -> bool:
        self.calls["create_network_policy"] += 1
        md = body["metadata"]
        with self._lock:
            if (md["namespace"], md["name"]) in self.network_policies:
                return False
            self.network_policies[(md["namespace"], md["name"])] = copy.deepcopy(body)
        return True

    def patch(self, kind: k.Kind, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls["patch"] += 1
        with self._lock:
            obj = self.objects.get((kind, namespace, name))
            if obj is None:
                raise ApiException(status=404, reason="NotFound")
            want = (patch.get("metadata") or {}).get("resourceVersion")
            if want is not None and want != obj["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
            new = merge(obj, patch)
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = self._bump()
            self.objects[(kind, namespace, name)] = new
            return copy.deepcopy(new)

    def patch_status(self, kind: k.Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        self.calls["patch_status"] += 1
        with self._lock:
            obj = self.objects.get((kind, namespace, name))
            if obj is None:
                return None
            obj["status"] = merge(obj.get("status") or {}, status)
            obj["metadata"]["resourceVersion"] = self._bump()
            return copy.deepcopy(obj)

    def delete(self, kind: k.Kind, namespace: str, name: str) -> bool:
        self.calls["delete"] += 1
        with self._lock:
            return self.objects.pop((kind, namespace, name), None) is not None

    def create_event(self, body: dict[str, Any]) -> None:
        self.calls["create_event"] += 1
        self.events.append(body)

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        self.calls["namespace_labels"] += 1
        return dict(self.labels.get(namespace, {"kubernetes.io/metadata.name": namespace}))
