"""The one way the operator posts Kubernetes Events: queued, posted by one background thread, so a
slow or failing API server never blocks a reconcile. When the queue is full, Events are dropped
(and counted): they are for people, status is the record."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes.client import ApiException

from graft.operator.guard import Failed, attempt
from graft.operator.kube import FIELD_MANAGER, Kube
from graft.operator.metrics import METRICS

log = logging.getLogger("graft.operator")


def event_body(obj: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about `obj`."""
    md = obj["metadata"]
    ts = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": md["name"],
            "namespace": md["namespace"], "uid": md.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, kube: Kube, capacity: int = 2000) -> None:
        self.kube = kube
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None

    def post(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event (never blocks)."""
        try:
            self._queue.put_nowait(event_body(obj, type_, reason, message, datetime.now(UTC)))
        except queue.Full:
            METRICS.record_error("Event", "QueueFull")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="graft-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            what = f"posting Event {body['reason']} on {body['involvedObject']['name']}"
            done = attempt(what, partial(self.kube.create_event, body), (ApiException,))  # one Event never ends the thread
            if isinstance(done, Failed) and done.expected:
                log.warning("could not post Event %s on %s: %s", body["reason"], body["involvedObject"]["name"], done.error)
