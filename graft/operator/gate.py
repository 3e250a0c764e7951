"""The admission gate of the loop: runs admission on every action that starts work, persists what it
decided (`status.admitted`) and applies it on every later reconcile (design.md sections 1 and 2).
It also resolves `finetunejob://` references (graft.api.references) against the store: a job
waits while the job it names runs, and keeps what the reference resolved to in `status.admitted`.

Policies come from the watch-fed store (parsed once per resourceVersion), namespace labels from
its small cache. `maxConcurrentJobs` is counted under a per-namespace lock over the jobs the
store knows as admitted and unfinished plus the ones this process admitted whose status write is
still on its way, so concurrent creates admit exactly the limit.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from graft.api.endpoint import ModelEndpoint
from graft.api.policy import FineTunePolicy
from graft.api.references import Unresolved, model_of, references, with_resolved
from graft.api.spec import FineTuneJob
from graft.api.status import Admitted, FineTuneJobStatus, Phase
from graft.operator import kube as k
from graft.operator.admission import AdmissionContext, admit_endpoint, admit_job
from graft.operator.cache import Store
from graft.operator.metrics import METRICS
from graft.operator.names import run_dir
from graft.operator.policy import KUEUE_QUEUE_LABEL
from graft.operator.settings import OperatorSettings
from graft.operator.status import ACCEPTED, Refusal
from graft.operator.unreadable import UnreadablePolicy, read_policy


@dataclass(frozen=True)
class Decision:
    job: FineTuneJob | None  # the job to run (admitted values applied); None when refused
    admitted: Admitted | None
    refusal: Refusal | None = None


def with_queue_label(job: FineTuneJob) -> FineTuneJob:
    """The `kueue.x-k8s.io/queue-name` label on the FineTuneJob names its queue when the spec does not."""
    label = job.metadata.labels.get(KUEUE_QUEUE_LABEL)
    if not label or job.spec.runtime.queue_name:
        return job
    out = job.model_copy(deep=True)
    out.spec.runtime.queue_name = label
    return out


def apply_admitted(job: FineTuneJob, admitted: Admitted) -> FineTuneJob:
    """The job with the runtime values admission decided (queue, image, TTL, deadline)."""
    out = job.model_copy(deep=True)
    rt = out.spec.runtime
    for attr in ("queue_name", "image", "ttl_seconds_after_finished", "active_deadline_seconds"):
        if getattr(admitted, attr) is not None:
            setattr(rt, attr, getattr(admitted, attr))
    return out


def record(job: FineTuneJob, policies: list[str], origin: dict[str, str], now: str) -> Admitted:
    rt = job.spec.runtime
    return Admitted(queue_name=rt.queue_name, image=rt.image, ttl_seconds_after_finished=rt.ttl_seconds_after_finished,
                    active_deadline_seconds=rt.active_deadline_seconds, policies=policies, defaults_from=origin, time=now)


def _policy_doc(raw: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {key: raw[key] for key in ("apiVersion", "kind", "spec") if key in raw}
    doc["metadata"] = {"name": raw["metadata"]["name"]}
    return doc


def _holds_a_slot(raw: dict[str, Any]) -> bool:
    st = raw.get("status") or {}
    accepted = any(c.get("type") == ACCEPTED and c.get("status") == "True" for c in st.get("conditions") or [])
    return accepted and not Phase(st.get("phase") or "Pending").is_terminal and not raw["metadata"].get("deletionTimestamp")


class Gate:
    def __init__(self, store: Store, settings: OperatorSettings) -> None:
        self.store, self.settings = store, settings
        self._parsed: dict[tuple[str, str], FineTunePolicy | UnreadablePolicy] = {}
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._admitting: dict[str, set[str]] = defaultdict(set)  # admitted here, status not yet seen

    def policies(self) -> tuple[list[FineTunePolicy], list[UnreadablePolicy]]:
        """Every FineTunePolicy, parsed once per resourceVersion, and those that do not parse (they
        refuse what they would have governed: graft.operator.unreadable)."""
        out: list[FineTunePolicy] = []
        unreadable: list[UnreadablePolicy] = []
        seen = set()
        for raw in self.store.items(k.FINETUNEPOLICIES):
            key = (raw["metadata"]["name"], str(raw["metadata"].get("resourceVersion")))
            seen.add(key)
            if key not in self._parsed:
                self._parsed[key] = read_policy(_policy_doc(raw))
            parsed = self._parsed[key]
            if isinstance(parsed, FineTunePolicy):
                out.append(parsed)
            else:
                unreadable.append(parsed)
        for stale in set(self._parsed) - seen:
            self._parsed.pop(stale, None)
        return out, unreadable

    def _lock(self, namespace: str) -> threading.Lock:
        with self._guard:
            return self._locks[namespace]

    def active_jobs(self, namespace: str, exclude: str) -> int:
        names = {r["metadata"]["name"] for r in self.store.items(k.FINETUNEJOBS, namespace) if _holds_a_slot(r)}
        return len((names | self._admitting[namespace]) - {exclude})

    def resolve(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> dict[str, str]:
        """Field -> model URI for each `finetunejob://` reference of `job`: what admission recorded,
        else the referenced job of the same namespace as the store has it. Raises Unresolved."""
        refs = references(job.spec)
        if not refs:
            return {}
        recorded = status.admitted.references if status is not None and status.admitted is not None else {}
        if set(refs) <= set(recorded):
            return {path: recorded[path] for path in refs}
        out: dict[str, str] = {}
        for path, ref in refs.items():
            raw = self.store.get(k.FINETUNEJOBS, job.metadata.namespace or "", ref)
            st = (raw or {}).get("status") or {}
            phase = (st.get("phase") or Phase.PENDING.value) if raw is not None else None
            out[path] = model_of(path, ref, phase, st.get("modelUri"), st.get("message") or "", home=self._home(raw))
        return out

    def _home(self, raw: dict[str, Any] | None) -> str:
        """The referenced job's own directory, `<root>/<namespace>/<name>-<uid8>`, that its modelUri
        must lie under; "" (nothing lies under it) when the job has no storage root or no uid."""
        meta = (raw or {}).get("metadata") or {}
        checkpoints = ((raw or {}).get("spec") or {}).get("checkpoints") or {}
        root = checkpoints.get("storage") or self.settings.result_storage
        uid = meta.get("uid") or ""
        if not root or not uid:
            return ""
        return run_dir(root, meta.get("namespace") or "", meta.get("name") or "", uid)

    def check(self, job: FineTuneJob, status: FineTuneJobStatus | None, now: str) -> Decision:
        """Admit `job` (spec with the queue label and any admitted values applied) under the current
        policies, once its `finetunejob://` references resolve; the decided job has them resolved."""
        ns, name = job.metadata.namespace or "", job.metadata.name
        try:
            resolved = self.resolve(job, status)
        except Unresolved as exc:
            reason = "WaitingForFineTuneJob" if exc.waiting else "ReferenceFailed"
            return Decision(None, None, Refusal(reason, [str(exc)], retryable=exc.waiting))
        base = with_queue_label(job)
        if status is not None and status.admitted is not None:
            base = apply_admitted(base, status.admitted)
        policies, unreadable = self.policies()
        labels = self.store.namespace_labels(ns) if policies or unreadable else {}
        limited = any(p.spec.limits.max_concurrent_jobs is not None for p in policies)
        lock = self._lock(ns) if limited else threading.Lock()
        with lock:
            ctx = AdmissionContext(labels, policies, self.active_jobs(ns, name) if limited else 0, self.settings, unreadable)
            adm = admit_job(base, ctx)
            if adm.allowed and limited:
                self._admitting[ns].add(name)
        if not adm.allowed:
            METRICS.record_admission("waiting" if adm.retryable else "rejected")
            return Decision(None, None, Refusal("PolicyViolation", adm.violations, retryable=adm.retryable))
        METRICS.record_admission("allowed")
        admitted = status.admitted if status and status.admitted else record(adm.job, adm.policies, adm.origin, now)
        if resolved and admitted.references != resolved:
            admitted = admitted.model_copy(update={"references": resolved})
        return Decision(with_resolved(adm.job, resolved), admitted)

    def check_endpoint(self, endpoint: ModelEndpoint) -> list[str]:
        """Violations of the tenant boundary by an endpoint (none: it may be deployed or changed)."""
        policies, unreadable = self.policies()
        labels = self.store.namespace_labels(endpoint.metadata.namespace or "") if policies or unreadable else {}
        return admit_endpoint(endpoint, AdmissionContext(labels, policies, 0, self.settings, unreadable)).violations

    def settled(self, namespace: str, name: str) -> None:
        """The job's admission is visible in the store (or it finished, or was deleted)."""
        with self._guard:
            self._admitting[namespace].discard(name)
            if not self._admitting[namespace]:
                self._admitting.pop(namespace, None)
