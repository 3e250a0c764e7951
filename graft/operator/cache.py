"""What the operator knows of the cluster, kept current by kopf's watches: reconciles read here, never GET.

Objects are stored as the wire dicts the watch (or a write's response) delivered, trimmed to what
the operator reads (`trimmed`), newest resourceVersion wins, and they are dropped when deleted, so
the store never outgrows the cluster. Namespace labels (for policy selectors) are read once per
namespace and kept for `label_ttl` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from graft.operator.backends.pods import slim
from graft.operator.kube import FINETUNEJOBS, FINETUNEPOLICIES, MODELENDPOINTS, PODS, RAYJOBS, RAYSERVICES, Kind

Key = tuple[str, str]
KINDS = (FINETUNEJOBS, MODELENDPOINTS, RAYJOBS, RAYSERVICES, FINETUNEPOLICIES, PODS)


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # opaque by contract; every real API server uses etcd revisions
        return 0


def trimmed(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without what no reconcile reads: `metadata.managedFields` (often the largest part of
    an object), a RayJob's or RayService's spec beyond `suspend` (Graft compares its children by the
    spec-hash annotation, never by their spec: the Ray cluster spec with its pod templates is most
    of such an object), a pod beyond its container states (`pods.slim`)."""
    if kind == PODS:
        return slim(obj)
    md = obj.get("metadata")
    if isinstance(md, dict) and "managedFields" in md:
        obj = {**obj, "metadata": {k: v for k, v in md.items() if k != "managedFields"}}
    if kind in (RAYJOBS, RAYSERVICES) and "spec" in obj:
        spec = obj.get("spec") or {}
        obj = {**obj, "spec": {"suspend": spec["suspend"]} if "suspend" in spec else {}}
    return obj


def key_of(obj: dict[str, Any]) -> Key:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md["name"])


class Store:
    def __init__(self, read_labels: Callable[[str], dict[str, str]] | None = None, label_ttl: float = 60.0) -> None:
        self._objects: dict[Kind, dict[Key, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._lock = threading.Lock()
        self._read_labels = read_labels
        self._labels: dict[str, tuple[float, dict[str, str]]] = {}
        self.label_ttl = label_ttl

    def put(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` (trimmed) unless a newer version is stored already; returns what is stored."""
        key = key_of(obj)
        obj = trimmed(kind, obj)
        with self._lock:
            bucket = self._objects[kind]
            old = bucket.get(key)
            if old is not None and _rv(old) > _rv(obj) and _rv(obj):
                return old
            bucket[key] = obj
            return obj

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        with self._lock:
            self._objects[kind].pop((namespace, name), None)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects[kind].get((namespace, name))

    def items(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [o for (ns, _), o in self._objects[kind].items() if namespace is None or ns == namespace]

    def labelled(self, kind: Kind, namespace: str, label: str, value: str) -> list[dict[str, Any]]:
        """The stored objects of `kind` in `namespace` whose label `label` is `value`."""
        with self._lock:
            return [o for (ns, _), o in self._objects[kind].items()
                    if ns == namespace and ((o.get("metadata") or {}).get("labels") or {}).get(label) == value]

    def keys(self, kind: Kind) -> list[Key]:
        with self._lock:
            return list(self._objects[kind])

    def count(self, kind: Kind) -> int:
        with self._lock:
            return len(self._objects[kind])

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            cached = self._labels.get(namespace)
        if cached is not None and now - cached[0] < self.label_ttl:
            return cached[1]
        labels = self._read_labels(namespace) if self._read_labels else {}
        with self._lock:
            self._labels[namespace] = (now, labels)
        return labels
