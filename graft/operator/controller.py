"""The running operator, without kopf: the store fed by watch events, the work queue that drives the
loop, the event recorder and the one safety net (a resync over the store every `resync_seconds`).

Watch events (`on_event`) only update the store and queue keys; worker threads run the loop. A
status write's response goes into the store at once, so the write's own watch event (same
resourceVersion) queues nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from typing import Any, cast

from graft.operator import kube as k
from graft.operator.backends.pods import pod_problem
from graft.operator.cache import Store, key_of
from graft.operator.events import EventRecorder
from graft.operator.guard import attempt
from graft.operator.loop import Loop
from graft.operator.names import LABEL_ENDPOINT, LABEL_JOB
from graft.operator.progress_reads import ProgressReads
from graft.operator.settings import OperatorSettings
from graft.operator.sweep import ApiConfirm, Sweeper
from graft.operator.workqueue import WorkQueue

log = logging.getLogger("graft.operator")
JOB, ENDPOINT = "FineTuneJob", "ModelEndpoint"


class Controller:
    def __init__(self, kube: k.Kube, settings: OperatorSettings, namespaces: list[str] | None = None) -> None:
        self.kube, self.settings = kube, settings
        self.namespaces = list(namespaces or [])
        self.store = Store(read_labels=kube.namespace_labels)
        self.events = EventRecorder(kube)
        self.queue = WorkQueue(self._process, workers=settings.workers)
        self.progress_reads = ProgressReads(settings.progress_seconds, self._progress_changed)
        self.loop = Loop(kube, self.store, settings, self.events, self.progress_reads)
        self._stop = threading.Event()
        self._resync: threading.Thread | None = None
        self.sweeper = Sweeper(settings, self.namespaces, settings.sweep_seconds)

    def _progress_changed(self, key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        self.queue.add((JOB, namespace, name))

    def _process(self, key: Hashable) -> float | None:
        kind, namespace, name = cast(tuple[str, str, str], key)
        if kind == JOB:
            return self.loop.reconcile_job(namespace, name)
        return self.loop.reconcile_endpoint(namespace, name)

    # ------------------------------------------------------------------ watch events
    def on_event(self, kind: k.Kind, event_type: str | None, obj: dict[str, Any]) -> None:
        """A watch event: update the store, queue what it concerns. Never blocks on the API server."""
        ns, name = key_of(obj)
        if event_type == "DELETED":
            self.store.delete(kind, ns, name)
            if kind == k.FINETUNEJOBS:
                self.loop.forget_job(ns, name)
            elif kind == k.MODELENDPOINTS:
                self.loop.finalizers.forget(kind, ns, name)
                self.loop.backoff.succeeded((ENDPOINT, ns, name))
            owner = self._owner(kind, obj)
            if owner is not None:
                self.queue.add(owner)
            return
        old = self.store.get(kind, ns, name)
        stored = self.store.put(kind, obj)
        if old is not None and (old is stored or _same_version(old, obj)):
            return  # our own write echoing back, or nothing new
        if kind == k.FINETUNEJOBS:
            self.queue.add((JOB, ns, name))
        elif kind == k.MODELENDPOINTS:
            self.queue.add((ENDPOINT, ns, name))
        elif kind == k.PODS:
            owner = self._owner(kind, obj)
            if owner is not None and pod_problem([obj]) is not None:
                self.queue.add(owner)
        elif kind in (k.RAYJOBS, k.RAYSERVICES):
            owner = self._owner(kind, obj)
            if owner is not None and (old is None or old.get("status") != obj.get("status")):
                self.queue.add(owner)

    @staticmethod
    def _owner(kind: k.Kind, obj: dict[str, Any]) -> tuple[str, str, str] | None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        if kind in (k.RAYJOBS, k.PODS) and labels.get(LABEL_JOB):
            return JOB, ns, labels[LABEL_JOB]
        if kind == k.RAYSERVICES and labels.get(LABEL_ENDPOINT):
            return ENDPOINT, ns, labels[LABEL_ENDPOINT]
        return None

    # ------------------------------------------------------------------ lifecycle
    def prime(self) -> None:
        """Fill the store with the children and policies before any reconcile (one LIST each), so a
        restart never mistakes a child the watch has not delivered yet for a missing one."""
        plain = self.namespaces and not any(("*" in n or "?" in n) for n in self.namespaces)
        for kind in (k.RAYJOBS, k.RAYSERVICES):
            found = [o for ns in self.namespaces for o in self.kube.list(kind, ns)] if plain else self.kube.list(kind)
            for obj in found:
                self.store.put(kind, obj)
        for obj in self.kube.list_policies():
            self.store.put(k.FINETUNEPOLICIES, obj)

    def start(self) -> None:
        self.prime()
        self.events.start()
        self.queue.start()
        self._resync = threading.Thread(target=self._resync_loop, name="graft-resync", daemon=True)
        self._resync.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        self.progress_reads.stop()
        self.events.stop()

    def alive(self) -> bool:
        return self.queue.alive() and self._resync is not None and self._resync.is_alive()

    def resync_once(self) -> None:
        """The safety net: queue every object that may still have work (from the store: no LIST),
        except those waiting out the backoff of a failed pass (graft.operator.guard)."""
        for raw in self.store.items(k.FINETUNEJOBS):
            if not raw["metadata"].get("deletionTimestamp") and self.loop.needs_work(raw):
                self._resync_key((JOB, *key_of(raw)))
        for raw in self.store.items(k.MODELENDPOINTS):
            if not raw["metadata"].get("deletionTimestamp"):
                self._resync_key((ENDPOINT, *key_of(raw)))

    def _resync_key(self, key: tuple[str, str, str]) -> None:
        if not self.loop.backoff.waiting(key):
            self.queue.add(key)

    def sweep_once(self) -> list[str]:
        """Stop Ray work on shared clusters whose FineTuneJob is gone (graft.operator.sweep)."""
        return self.sweeper.run(self.store.items(k.FINETUNEJOBS), self.store.items(k.MODELENDPOINTS), time.monotonic(),
                                ApiConfirm(self.kube, self.settings))

    def _resync_loop(self) -> None:
        """Resync and sweep until stopped; a pass that fails is logged and the next one runs
        (graft.operator.guard), so the thread never dies of one object."""
        while not self._stop.wait(self.settings.resync_seconds):
            attempt("the resync", self.resync_once)
            if self.sweeper.due(time.monotonic()):
                attempt("the orphan sweep", self.sweep_once)


def _same_version(old: dict[str, Any], new: dict[str, Any]) -> bool:
    rv_old = (old.get("metadata") or {}).get("resourceVersion")
    return rv_old is not None and rv_old == (new.get("metadata") or {}).get("resourceVersion")
