"""kopf registrations only: watch events go to the controller's store and work queue.

Only event handlers watch the Graft kinds: kopf keeps no annotations, finalizers or diff-bases on
them (no writes and no change detection of its own per object). The finalizer of objects on a
shared Ray cluster is the loop's (graft.operator.finalizer).
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from graft.operator import kube as k
from graft.operator.controller import Controller
from graft.operator.names import LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY


def build_registry(ctl: Controller) -> kopf.OperatorRegistry:
    """All handlers, bound to `ctl`, in a fresh registry (no module-level state)."""
    reg = kopf.OperatorRegistry()
    managed = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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
    watch(k.PODS, labels={**managed, LABEL_JOB: kopf.PRESENT})  # the Ray pods of Graft's RayJobs

    return reg
