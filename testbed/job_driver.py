"""Run `python -m graft.jobs` as a RayJob would, kill it like a preemption, and run it again.

A RayJob runs the entrypoint `python -m graft.jobs --spec ... --result ...` on a fresh RayCluster;
with `backoffLimit`, a failed attempt is retried on a new cluster with the same arguments. Here a
real Ray head (testbed/ray_head.py, own ports and temp dir) plays the cluster, the driver runs
as a subprocess connected to it, and durable storage is a real S3 server (testbed/s3server.py).

    attempt = JobAttempt(spec_path, result_uri, head, log_path).start()
    attempt.kill()          # SIGKILL the driver's whole process group: the Ray job dies with it
    attempt.wait(timeout)   # -> exit code

Used by the chaos tests and bench/resume.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft import storage
from testbed.process import Process, wait_until
from testbed.ray_head import RayHead


def job_document(spec: dict[str, Any], *, name: str, namespace: str, uid: str) -> dict[str, Any]:
    """The FineTuneJob the operator hands the job: metadata with namespace and uid."""
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": spec}


class JobAttempt:
    """One attempt of a job: the graft.jobs driver as a subprocess on `head`."""

    def __init__(self, spec_path: Path, result_uri: str, head: RayHead, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", "graft.jobs", "--spec", str(spec_path), "--result", result_uri, "--address", head.gcs_address]
        self.env = {**head.env, "RAY_ADDRESS": head.gcs_address, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = log_path
        self.process = Process("graft.jobs driver", self.argv, log_path, env=self.env)
        self.started = 0.0

    def start(self) -> JobAttempt:
        self.started = time.monotonic()
        self.process.start()
        return self

    def exited(self) -> bool:
        return self.process.proc is not None and not self.process.running()

    def kill(self) -> None:
        """SIGKILL the driver and everything in its session (a preempted head pod)."""
        self.process.kill(timeout=30)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the job did not finish within {timeout:.0f}s; log:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 60) -> str:
        return self.process.tail(lines, skip="PlacementGroupCleaner")


def read_progress(uri: str) -> dict[str, Any] | None:
    """The tracker's graft_progress.json, or None while there is none."""
    try:
        return dict(storage.read_json(uri))
    except FileNotFoundError:
        return None


def epochs_done(progress: dict[str, Any] | None) -> dict[str, list[int]]:
    """Trial -> epochs in its history."""
    if not progress:
        return {}
    return {t: sorted(h["epoch"] for h in s["history"]) for t, s in progress["trials"].items()}


def wait_while_running(check: Callable[[], Any], timeout: float, what: str, attempt: JobAttempt | None = None,
                       interval: float = 1.0) -> Any:
    """:func:`testbed.process.wait_until` (exceptions of ``check`` propagate) that fails at once,
    with the driver's log, when ``attempt`` exits first."""
    def step() -> Any:
        value = check()
        if not value and attempt is not None and attempt.exited():
            raise AssertionError(f"the job exited ({attempt.process.returncode}) while waiting for {what}; log:\n{attempt.log_tail()}")
        return value

    try:
        return wait_until(step, timeout=timeout, interval=interval, what=what, retry=())
    except TimeoutError as exc:
        if attempt is None:
            raise
        raise TimeoutError(f"{exc}; log:\n{attempt.log_tail()}") from None
