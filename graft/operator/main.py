"""`graft operator`: run the kopf operator in-process (never `kopf run file.py`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from typing import Any

from graft.operator.settings import DEFAULT_RAY_IMAGE, OperatorSettings


def _priority(value: str) -> int:
    if value == "random":
        return random.randint(1, 1_000_000)
    try:
        return int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--priority {value!r}: use an integer or 'random'") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable; globs allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default without --namespace)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG / ~/.kube/config)")
    peer = p.add_mutually_exclusive_group()
    peer.add_argument("--standalone", action="store_true", default=True, help="no peering with other operator replicas (default)")
    peer.add_argument("--peering", metavar="NAME", help="coordinate replicas through this KopfPeering object")
    p.add_argument("--priority", type=_priority, default=0,
                   help="peering priority (an integer, or 'random' so replicas of one Deployment differ)")
    p.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--ray-image", default=os.environ.get("GRAFT_RAY_IMAGE", DEFAULT_RAY_IMAGE), help="default Ray image (with graft)")
    p.add_argument("--result-storage", help="shared path/URI for result.json of jobs without spec.checkpoints.storage")
    p.add_argument("--storage-pvc", help="PVC mounted into every Ray pod (at --storage-mount-path)")
    p.add_argument("--storage-mount-path", default="/mnt/graft")
    p.add_argument("--storage-group", type=int, default=2000,
                   help="GID shared by the Ray pods and the operator on the storage PVC (docs/install.md#storage)")
    p.add_argument("--service-account", help="ServiceAccount of the Ray pods")
    p.add_argument("--ray-ingress-from", type=_peers, metavar="JSON",
                   help="JSON list of NetworkPolicy peers (the operator, KubeRay) admitted to every Ray cluster's pods "
                        "besides its own; a NetworkPolicy per cluster is created only with it")
    p.add_argument("--ray-auth-key-file", help="operator key (>= 32 bytes) from which each Ray cluster's token is derived "
                   "(default: a random key per process; the chart mounts one from a Secret)")
    p.add_argument("--image-pull-policy", choices=["Always", "IfNotPresent", "Never"], default="IfNotPresent")
    p.add_argument("--submission-mode", choices=["K8sJobMode", "HTTPMode", "SidecarMode"],
                   help="how KubeRay submits a RayJob's Ray job: K8sJobMode (a submitter pod, default) or HTTPMode (no extra pod)")
    p.add_argument("--resync-seconds", type=float, default=30.0, help="safety net: how often every unfinished object is reconciled")
    p.add_argument("--progress-seconds", type=float, help="how often a running job's progress is read into status, at most (default 15)")
    p.add_argument("--workers", type=int, help="reconcile worker threads (default 8)")
    p.add_argument("--serve-port", type=int, help="Serve HTTP port: of RayService clusters, and the one Graft starts Serve on "
                   "on a shared Ray cluster where Serve is not running yet (default 8000)")
    p.add_argument("--shared-poll-seconds", type=float, help="how often jobs and endpoints on shared Ray clusters are polled (default 5)")
    p.add_argument("--shared-dashboard-url", help="dashboard URL template of a RayCluster named by spec.runtime.cluster.name "
                   "(default http://{name}-head-svc.{namespace}.svc:8265)")
    sizes = p.add_argument_group("Ray pod sizes (Kubernetes quantities; a spec's own sizes win)")
    sizes.add_argument("--head-cpu", help="CPU of every Ray head pod (default 1)")
    sizes.add_argument("--head-cpu-limit", help="CPU limit of every Ray head container (default: --head-cpu); heads run "
                       "Ray with no logical CPUs, so a limit above a small request only lets Ray start faster")
    sizes.add_argument("--head-memory", help="memory of every Ray head pod (default 4Gi)")
    sizes.add_argument("--worker-memory", help="memory of a training worker pod when spec.resources.memoryPerWorker is unset (default 4Gi)")
    sizes.add_argument("--serve-memory", help="memory of a Serve worker pod when spec.serving.resources.memory is unset (default 2Gi)")
    tenancy = p.add_argument_group("tenancy (docs/tenancy.md)")
    tenancy.add_argument("--require-policy", action=argparse.BooleanOptionalAction, default=None,
                         help="run jobs and endpoints only in namespaces a FineTunePolicy selects (on unless "
                              "--no-require-policy: a single-team cluster without policies)")
    tenancy.add_argument("--allow-cluster-address", action="append", default=[], metavar="PATTERN",
                         help="shared Ray cluster address (prefix or glob, e.g. http://ray.ray-system.svc:8265) every "
                              "namespace may use; repeatable. Without it only Services in the job's own namespace")
    tenancy.add_argument("--job-env", action="append", default=[], metavar="KEY=VALUE",
                         help="environment of every training job, which tenants cannot override; repeatable "
                              "(e.g. HF_HUB_OFFLINE=1 on a cluster without hub access)")
    tenancy.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                         help="environment of every endpoint's Serve replicas; repeatable")
    p.add_argument("--verbose", action="store_true")


def _peers(text: str) -> list[dict[str, Any]]:
    """--ray-ingress-from: a JSON list of NetworkPolicy peer objects."""
    try:
        peers = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
        raise argparse.ArgumentTypeError("write a JSON list of NetworkPolicy peers, e.g. [{\"namespaceSelector\": {...}}]")
    return peers


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} {item!r}: write KEY=VALUE")
        out[key] = value
    return out


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    fields: dict[str, Any] = {
        "ray_image": args.ray_image,
        "result_storage": args.result_storage,
        "storage_pvc": args.storage_pvc,
        "storage_mount_path": args.storage_mount_path,
        "storage_group": args.storage_group,
        "service_account": args.service_account,
        "ray_auth_key_file": getattr(args, "ray_auth_key_file", None),
        "ray_ingress_from": getattr(args, "ray_ingress_from", None),
        "image_pull_policy": args.image_pull_policy,
        "resync_seconds": args.resync_seconds,
        "serve_port": getattr(args, "serve_port", None),
        "shared_poll_seconds": getattr(args, "shared_poll_seconds", None),
        "shared_dashboard_url": getattr(args, "shared_dashboard_url", None),
        "submission_mode": getattr(args, "submission_mode", None),
        "head_cpu": getattr(args, "head_cpu", None),
        "head_cpu_limit": getattr(args, "head_cpu_limit", None),
        "head_memory": getattr(args, "head_memory", None),
        "worker_memory": getattr(args, "worker_memory", None),
        "serve_memory": getattr(args, "serve_memory", None),
        "require_policy": getattr(args, "require_policy", None),
        "allowed_cluster_addresses": getattr(args, "allow_cluster_address", None) or None,
        "progress_seconds": getattr(args, "progress_seconds", None),
        "workers": getattr(args, "workers", None),
    }
    defaults = OperatorSettings()
    for flag, field in (("--job-env", "job_env"), ("--serve-env", "serve_env")):
        extra = getattr(args, field, None) or []
        if extra:
            fields[field] = {**getattr(defaults, field), **_key_values(extra, flag)}
    return OperatorSettings(**{key: v for key, v in fields.items() if v is not None})


def main(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = os.path.abspath(args.kubeconfig)  # kopf's login reads it too
    import kopf

    from graft.operator.controller import Controller
    from graft.operator.handlers import build_registry
    from graft.operator.kube import Kube, api_client
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger("graft").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # kopf logs every event handler run at INFO: one line per watch event of every object otherwise.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # one line per Ray API call otherwise
    settings = settings_from_args(args)
    namespaces = list(args.namespace)
    ctl = Controller(Kube(api_client(args.kubeconfig, pool_size=settings.workers * 2)), settings, namespaces)
    if args.metrics_port is not None:
        from graft.operator.metrics import start_metrics_server

        start_metrics_server(args.metrics_port)
    print(
        f"graft operator: watching {', '.join(namespaces) if namespaces else 'all namespaces'}; "
        f"ray image {settings.ray_image}",
        file=sys.stderr,
        flush=True,
    )
    kopf.run(
        registry=build_registry(ctl),
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness,
    )
    return 0
