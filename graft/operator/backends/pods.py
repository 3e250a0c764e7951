"""Pod failures KubeRay does not report on a RayJob: an image that cannot be pulled, a container
killed for memory. Without them a RayJob waits in Initializing for ever (bad image) or the Ray job
fails later with a generic "node died" (OOM); the operator reads the job's pods and fails the
FineTuneJob at once with a reason that names the pod and the field to fix.

`pod_problem` is a pure function of the pods' JSON. The operator watches the Ray pods of its RayJobs
(labels `app.kubernetes.io/managed-by` and `graft.dev/finetunejob`, set on the pod templates) and
keeps them in its store trimmed by `slim` to what `pod_problem` reads; a pod that shows a problem
queues its job, and `RayJobBackend` looks at the stored pods of the job's Ray cluster (label
`ray.io/cluster`): no pod is listed per reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
CLUSTER_LABEL = "ray.io/cluster"
NODE_TYPE_LABEL = "ray.io/node-type"


@dataclass(frozen=True)
class PodProblem:
    reason: str  # ImagePullFailed | OOMKilled
    message: str


def pod_problem(pods: list[dict[str, Any]]) -> PodProblem | None:
    """The first image pull failure or OOM kill among `pods` (head first), or None."""
    ordered = sorted(pods, key=lambda p: _node_type(p) != "head")
    for pod in ordered:
        problem = _image_problem(pod) or _oom_problem(pod)
        if problem is not None:
            return problem
    return None


def slim(pod: dict[str, Any]) -> dict[str, Any]:
    """The parts of a pod `pod_problem` reads (and the store needs): a few hundred bytes, not the
    pod's whole spec and status."""
    md, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    keep = ("name", "image", "state", "lastState")
    return {
        "metadata": {k: md[k] for k in ("name", "namespace", "labels", "resourceVersion", "deletionTimestamp") if k in md},
        "spec": {"containers": [{"name": c.get("name"), "resources": {"limits": {"memory": ((c.get("resources") or {}).get("limits") or {}).get("memory")}}}
                                for c in spec.get("containers") or []]},
        "status": {key: [{k: cs[k] for k in keep if k in cs} for cs in st.get(key) or []]
                   for key in ("initContainerStatuses", "containerStatuses")},
    }


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    st = pod.get("status") or {}
    return [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]


def _node_type(pod: dict[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(NODE_TYPE_LABEL)


def _role(pod: dict[str, Any]) -> str:
    return f"{_node_type(pod) or 'Ray'} pod {(pod.get('metadata') or {}).get('name')}"


def _image_problem(pod: dict[str, Any]) -> PodProblem | None:
    for cs in _statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            detail = waiting.get("message") or waiting["reason"]
            return PodProblem("ImagePullFailed", (
                f"the {_role(pod)} cannot start: image {cs.get('image')!r} ({waiting['reason']}: {detail}); "
                "set spec.runtime.image to an image the nodes can pull, or fix the operator's --ray-image "
                "(chart value operator.rayImage)"))
    return None


def _oom_problem(pod: dict[str, Any]) -> PodProblem | None:
    limits = {c.get("name"): ((c.get("resources") or {}).get("limits") or {}).get("memory")
              for c in (pod.get("spec") or {}).get("containers") or []}
    for cs in _statuses(pod):
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            if ((state.get("terminated") or {}).get("reason")) == "OOMKilled":
                limit = limits.get(cs.get("name"))
                field = ("spec.resources.memoryPerWorker" if _node_type(pod) == "worker"
                         else "the operator's head memory (chart value operator.headMemory)")
                return PodProblem("OOMKilled", (
                    f"the {_role(pod)} was killed for using more than its memory limit ({limit or 'none set'}); "
                    f"raise {field}, or lower training.batchSize / training.maxSeqLength"))
    return None
