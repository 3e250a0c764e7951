"""The finalizer of FineTuneJobs and ModelEndpoints whose Ray work runs on a shared cluster.

Nothing in Kubernetes owns a Ray job submitted to a shared cluster, nor a Serve application
deployed there, so the loop adds `graft.dev/finalizer` to such an object before it starts any
work, and once the object is being deleted runs the backend's cleanup (stop the Ray job, forget
it; remove the application) until it reports nothing left, then removes the finalizer. RayJob and
RayService children need none: their ownerReference lets garbage collection delete them.

An unreachable cluster is retried `MAX_CLEANUP_TRIES` times, then given up with a warning, so a
dead cluster never blocks deletion (the orphan sweep stops whatever comes back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubernetes.client import ApiException

from graft.operator import kube as k
from graft.operator.cache import Store
from graft.operator.names import PREFIX
from graft.operator.objects import Raw
from graft.operator.shared.jobs import ClusterUnavailable

log = logging.getLogger("graft.operator")
FINALIZER = f"{PREFIX}/finalizer"
MAX_CLEANUP_TRIES = 10
POLL_SECONDS = 2.0  # while the Ray work is stopping
UNREACHABLE_SECONDS = 10.0  # while the cluster cannot be reached


def has_finalizer(raw: Raw) -> bool:
    return FINALIZER in (raw["metadata"].get("finalizers") or [])


class Finalizers:
    def __init__(self, kube: k.Kube, store: Store) -> None:
        self.kube, self.store = kube, store
        self._tries: dict[tuple[str, str, str], int] = {}

    def ensure(self, kind: k.Kind, raw: Raw) -> Raw:
        """The object with the finalizer (added with one conditional patch when missing)."""
        if has_finalizer(raw):
            return raw
        md = raw["metadata"]
        finalizers = [*(md.get("finalizers") or []), FINALIZER]
        obj = self.kube.patch(kind, md["namespace"], md["name"],
                              {"metadata": {"finalizers": finalizers, "resourceVersion": md["resourceVersion"]}})
        return self.store.put(kind, obj)

    def finish(self, kind: k.Kind, raw: Raw, cleanup: Callable[[Raw], bool]) -> float | None:
        """One deletion pass: when `cleanup` reports nothing left running, remove the finalizer
        (None); else the seconds until the next pass."""
        md = raw["metadata"]
        key = (kind.plural, md["namespace"], md["name"])
        try:
            done = cleanup(raw)
        except ClusterUnavailable as exc:
            tries = self._tries.get(key, 0) + 1
            if tries < MAX_CLEANUP_TRIES:
                self._tries[key] = tries
                log.info("%s %s/%s: cleanup retried in %.0fs: %s", kind.plural, md["namespace"], md["name"], UNREACHABLE_SECONDS, exc)
                return UNREACHABLE_SECONDS
            log.warning("%s %s/%s: giving up on its Ray work after %d tries: %s", kind.plural, md["namespace"], md["name"], tries, exc)
            done = True
        if not done:
            return POLL_SECONDS
        self._tries.pop(key, None)
        left = [f for f in md.get("finalizers") or [] if f != FINALIZER]
        try:
            self.kube.patch(kind, md["namespace"], md["name"],
                            {"metadata": {"finalizers": left, "resourceVersion": md["resourceVersion"]}})
        except ApiException as exc:
            if exc.status == 404:  # already gone
                return None
            raise
        return None

    def forget(self, kind: k.Kind, namespace: str, name: str) -> None:
        self._tries.pop((kind.plural, namespace, name), None)
