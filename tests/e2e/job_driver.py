"""Run `python -m graft.jobs` as a RayJob would, kill it like a preemption, and run it again.

A RayJob runs the entrypoint `python -m graft.jobs --spec ... --result ...` on a fresh RayCluster;
with `backoffLimit`, a failed attempt is retried on a new cluster with the same arguments. Here a
real Ray head (tests/e2e/shared_ray.py, own ports and temp dir) plays the cluster, the driver runs
as a subprocess connected to it, and durable storage is a real S3 server (tests/s3server.py).

    attempt = JobAttempt(spec_path, result_uri, head, log_path).start()
    attempt.kill()          # SIGKILL the driver's whole process group: the Ray job dies with it
    attempt.wait(timeout)   # -> exit code

Used by the chaos tests and bench/resume.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft import storage
from tests.e2e.shared_ray import RayHead


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
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> JobAttempt:
        self.started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the driver and everything in its session (a preempted head pod)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"the job did not finish within {timeout:.0f}s; log:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        keep = [line for line in text.splitlines() if "PlacementGroupCleaner" not in line]
        return "\n".join(keep[-lines:])


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


def wait_until(check: Callable[[], Any], timeout: float, what: str, attempt: JobAttempt | None = None, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if attempt is not None and attempt.proc is not None and attempt.proc.poll() is not None:
            raise AssertionError(f"the job exited ({attempt.proc.returncode}) while waiting for {what}; log:\n{attempt.log_tail()}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; log:\n{attempt.log_tail()}" if attempt else ""))
