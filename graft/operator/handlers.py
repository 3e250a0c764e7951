"""kopf registrations only: watch events go to the controller's store and work queue; deletion of
objects on a shared Ray cluster (nothing in Kubernetes owns their Ray work) runs a finalizer.

Only event handlers watch the Graft kinds, so kopf keeps no annotations on them (no writes of its
own per job); the shared-cluster delete handlers add kopf's finalizer to those objects only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from graft.operator import kube as k
from graft.operator.controller import Controller
from graft.operator.names import LABEL_MANAGED_BY, MANAGED_BY, PREFIX
from graft.operator.shared.jobs import ClusterUnavailable

MAX_CLEANUP_RETRIES = 10
log = logging.getLogger("graft.operator")


def _shared_job(spec: Any, **_: Any) -> bool:
    return bool(((spec or {}).get("runtime") or {}).get("cluster"))


def _shared_endpoint(spec: Any, **_: Any) -> bool:
    return bool((spec or {}).get("cluster"))


def _cleanup(done: Any, body: kopf.Body, retry: int) -> None:
    """Map a cleanup outcome onto kopf's retries: wait while Ray work still runs, give up on an unreachable cluster."""
    try:
        finished = done(dict(body))
    except ClusterUnavailable as exc:
        if retry >= MAX_CLEANUP_RETRIES:
            log.warning("giving up on the Ray work of %s/%s: %s", body.metadata.namespace, body.metadata.name, exc)
            return
        raise kopf.TemporaryError(str(exc), delay=10) from exc
    if not finished:
        raise kopf.TemporaryError("waiting for the Ray work to stop", delay=2)


def build_registry(ctl: Controller) -> kopf.OperatorRegistry:
    """All handlers, bound to `ctl`, in a fresh registry (no module-level state)."""
    reg = kopf.OperatorRegistry()
    managed = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key="last-handled-configuration")
        settings.posting.enabled = False  # Events are posted by graft.operator.events, off the reconcile path
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        ctl.start()

    @kopf.on.cleanup(registry=reg)
    def stop(**_: Any) -> None:
        ctl.stop()

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> Any:
        # An explicit --kubeconfig ($KUBECONFIG, read now) wins; else in-cluster, else the default kubeconfig.
        if os.environ.get("KUBECONFIG"):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_via_client(**kwargs)

    @kopf.on.probe(id="loop", registry=reg)
    def probe(**_: Any) -> str:
        if not ctl.alive():
            raise RuntimeError("a reconcile worker or the resync thread has stopped")
        return "ok"

    def watch(kind: k.Kind, **filters: Any) -> None:
        @kopf.on.event(kind.group, kind.version, kind.plural, registry=reg, **filters)
        async def on_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            ctl.on_event(kind, type, dict(body))

    watch(k.FINETUNEJOBS)
    watch(k.MODELENDPOINTS)
    watch(k.FINETUNEPOLICIES)
    watch(k.RAYJOBS, labels=managed)
    watch(k.RAYSERVICES, labels=managed)

    @kopf.on.delete(k.FINETUNEJOBS.group, k.FINETUNEJOBS.version, k.FINETUNEJOBS.plural, when=_shared_job, registry=reg)
    def shared_job_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
        _cleanup(ctl.loop.cleanup_job, body, retry)

    @kopf.on.delete(k.MODELENDPOINTS.group, k.MODELENDPOINTS.version, k.MODELENDPOINTS.plural, when=_shared_endpoint, registry=reg)
    def shared_endpoint_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
        _cleanup(ctl.loop.cleanup_endpoint, body, retry)

    return reg
