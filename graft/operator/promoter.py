"""Promotion with I/O: create or update the ModelEndpoint a succeeded job promotes into.

The decision is `promotion.decide_promotion` (pure). The endpoint is read from the store; the
update carries its resourceVersion, so two jobs promoting into one endpoint at once never lose a
version bump (on a conflict the endpoint is read again and the decision made again). The same update
adds the job to the endpoint's promotion ledger, so a promotion the job's status did not record
(the operator died in between) is found there and not applied again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kubernetes.client import ApiException

from graft.api.endpoint import ServedModel
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.api.status import Promotion
from graft.operator import kube as k
from graft.operator.builders import build_endpoint, build_promoted_model
from graft.operator.builders.endpoint import promotions, with_promotion
from graft.operator.cache import Store
from graft.operator.promotion import decide_promotion
from graft.operator.status import iso

log = logging.getLogger("graft.operator")
ATTEMPTS = 5


class PromotionConflict(RuntimeError):
    """The endpoint kept changing while promoting; retried later."""


def promote(kube: k.Kube, store: Store, job: FineTuneJob, result: TrainingResult, url: str) -> tuple[Promotion | None, str | None]:
    """(the promotion record, the endpoint URL when the model is or becomes served there)."""
    serving = job.spec.serving
    if not serving.enabled:
        return None, None
    ns = job.metadata.namespace or ""
    ep_name = serving.endpoint or job.metadata.name
    existing = store.get(k.MODELENDPOINTS, ns, ep_name)
    for _ in range(ATTEMPTS):
        now = iso(datetime.now(UTC))
        current = ServedModel.model_validate(existing["spec"]["model"]) if existing else None
        ledger = promotions(existing)
        uid = job.metadata.uid_or_empty()
        done = next((e for e in ledger if uid and e.get("uid") == uid), None)
        if done is not None:
            later = f"; the endpoint now serves version {current.version}" if current and current.version != done.get("version") else ""
            return Promotion(endpoint=ep_name, decision="promoted", reason=f"promoted as version {done.get('version')}{later}", time=now), url
        if current is not None and current.source_job == job.metadata.name and current.uri == result.model_uri:
            # Promoted before the ledger existed (endpoints of earlier Graft versions).
            return Promotion(endpoint=ep_name, decision="promoted", reason=f"serving as version {current.version}", time=now), url
        decision = decide_promotion(serving.promotion, current, result)
        record = Promotion(endpoint=ep_name, decision=decision.decision, reason=decision.reason, time=now)
        if not decision.promote:
            return record, None
        try:
            if existing is None:
                obj, created = kube.create(k.MODELENDPOINTS, build_endpoint(job, result, ep_name))
            else:
                version = (current.version if current else 0) + 1
                obj = kube.patch(k.MODELENDPOINTS, ns, ep_name, {
                    "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"],
                                 "annotations": with_promotion(ledger, job, version)},
                    "spec": {"model": build_promoted_model(job, result, version)},
                })
                created = True
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = kube.get(k.MODELENDPOINTS, ns, ep_name)  # a read only on conflict
            continue
        store.put(k.MODELENDPOINTS, obj)
        if not created:  # someone else created it first: decide again against theirs
            existing = obj
            continue
        log.info("promoted %s/%s into ModelEndpoint %s: %s", ns, job.metadata.name, ep_name, decision.reason)
        return record, url
    raise PromotionConflict(f"ModelEndpoint {ns}/{ep_name} kept changing while promoting")
