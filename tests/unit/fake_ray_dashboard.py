"""A fake Ray dashboard on 127.0.0.1: the Job Submission REST API that Graft and Ray's
`JobSubmissionClient` call, over real HTTP, with jobs held in memory.

Endpoints (as Ray's dashboard answers them):
    GET  /api/version                       the cluster's Ray version (JobSubmissionClient checks it)
    GET  /api/packages/<protocol>/<name>    200 when the working_dir package was uploaded, else 404
    PUT  /api/packages/<protocol>/<name>    upload a working_dir package (a zip)
    POST /api/jobs/                         submit; a reused submission id is refused (400), as Ray does
    GET  /api/jobs/<id>                     the job's record, 404 when unknown
    GET  /api/jobs/<id>/logs                {"logs": ...}, 404 when unknown
    POST /api/jobs/<id>/stop                {"stopped": bool}; STOPPED at once unless `slow_stop`
    DELETE /api/jobs/<id>                   {"deleted": true} for a terminal job, 400 for a running one

The test moves jobs along itself (`set_status`, `finish_stop`): nothing runs. With `token` set, every
request must carry it as Ray's token authentication reads it (`Authorization` or
`X-Ray-Authorization: Bearer <token>`): none is 401, a wrong one 403, as Ray answers.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RAY_VERSION = "2.60.0"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class FakeJob:
    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    status: str = "PENDING"
    message: str = ""
    logs: str = ""
    start_time: int = 0
    end_time: int = 0
    stop_requested: bool = False
    files: dict[str, str] = field(default_factory=dict)  # the working_dir package's text files


class FakeRayDashboard:
    """Use as a context manager; `url` is the dashboard address, `calls` every (method, path) served."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.refused: list[tuple[str, str, int]] = []  # (method, path, 401/403) turned away for the token
        self.jobs: dict[str, FakeJob] = {}
        self.packages: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.slow_stop = False  # True: a stop leaves the job RUNNING until finish_stop()
        self.wrong_shape: list[Any] = []  # [doc]: every /api/jobs and /api/serve request answers doc (200)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake-ray-dashboard", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeRayDashboard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the test's side -----------------------------------------------------------------------------

    def add(self, sid: str, status: str = "RUNNING", *, logs: str = "") -> FakeJob:
        """A job the cluster already runs (submitted by someone else, or before the test)."""
        with self._lock:
            self.jobs[sid] = FakeJob(sid, "python -m graft.jobs", {}, {})
        self.set_status(sid, status, logs=logs)
        return self.jobs[sid]

    def set_status(self, sid: str, status: str, *, logs: str | None = None, message: str = "") -> None:
        with self._lock:
            job = self.jobs[sid]
            job.status, job.message = status, message
            if logs is not None:
                job.logs = logs
            if status == "RUNNING" and not job.start_time:
                job.start_time = 1_767_225_600_000  # 2026-01-01T00:00:00Z
            if status in TERMINAL:
                job.end_time = job.start_time + 60_000

    def finish_stop(self, sid: str) -> None:
        """The stop asked for earlier has taken effect (slow_stop)."""
        assert self.jobs[sid].stop_requested, f"no stop was asked for {sid}"
        self.set_status(sid, "STOPPED", message="Job was intentionally stopped.")

    def requests(self, method: str, prefix: str = "/api/jobs") -> list[str]:
        return [path for m, path in self.calls if m == method and path.startswith(prefix)]

    # -- the server's side ---------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, code: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                body = self._body()
                path = self.path.split("?", 1)[0]
                with dashboard._lock:
                    code = dashboard._auth(self.headers.get("Authorization") or self.headers.get("X-Ray-Authorization"))
                    if code:
                        dashboard.refused.append((method, path, code))
                        doc: Any = {"error": "Unauthorized" if code == 401 else "Forbidden"}
                    else:
                        dashboard.calls.append((method, path))
                        code, doc = dashboard._answer(method, path, body)
                self._send(code, doc)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._serve("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

        return Handler

    def _auth(self, header: str | None) -> int:
        """0 when the request may pass; 401 without a token, 403 with a wrong one (Ray's answers)."""
        if self.token is None:
            return 0
        if not header:
            return 401
        return 0 if header == f"Bearer {self.token}" else 403

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if self.wrong_shape and parts[:2] in (["api", "jobs"], ["api", "serve"]):
            return 200, self.wrong_shape[0]
        if parts == ["api", "version"] and method == "GET":
            return 200, {"version": "4", "ray_version": RAY_VERSION, "ray_commit": "fake"}
        if parts[:2] == ["api", "packages"] and len(parts) == 4:
            uri = f"{parts[2]}://{parts[3]}"
            if method == "PUT":
                self.packages[uri] = body
                return 200, {}
            return (200, {}) if uri in self.packages else (404, {"error": f"{uri} not found"})
        if parts[:2] != ["api", "jobs"]:
            return 404, {"error": f"no route {method} {path}"}
        if len(parts) == 2 and method == "POST":
            return self._submit(json.loads(body or b"{}"))
        job = self.jobs.get(parts[2]) if len(parts) >= 3 else None
        if job is None:
            return 404, {"error": f"Job {parts[2] if len(parts) > 2 else ''} does not exist"}
        tail = parts[3:]
        if tail == [] and method == "GET":
            return 200, {"type": "SUBMISSION", "submission_id": job.submission_id, "job_id": None, "status": job.status,
                         "entrypoint": job.entrypoint, "message": job.message, "start_time": job.start_time,
                         "end_time": job.end_time, "metadata": job.metadata, "runtime_env": job.runtime_env}
        if tail == ["logs"] and method == "GET":
            return 200, {"logs": job.logs}
        if tail == ["stop"] and method == "POST":
            if job.status in TERMINAL:
                return 200, {"stopped": False}
            job.stop_requested = True
            if not self.slow_stop:
                job.status, job.message = "STOPPED", "Job was intentionally stopped."
                job.end_time = (job.start_time or 1_767_225_600_000) + 60_000
            return 200, {"stopped": True}
        if tail == [] and method == "DELETE":
            if job.status not in TERMINAL:
                return 400, {"error": f"Job {job.submission_id} is not in a terminal state"}
            del self.jobs[job.submission_id]
            return 200, {"deleted": True}
        return 404, {"error": f"no route {method} {path}"}

    def _submit(self, req: dict[str, Any]) -> tuple[int, Any]:
        sid = str(req.get("submission_id") or f"raysubmit_{len(self.jobs)}")
        if sid in self.jobs:
            return 400, {"error": f"Job with submission_id {sid} already exists. Please use a different submission_id."}
        runtime_env = dict(req.get("runtime_env") or {})
        files: dict[str, str] = {}
        package = self.packages.get(str(runtime_env.get("working_dir") or ""))
        if package is not None:
            with zipfile.ZipFile(io.BytesIO(package)) as zf:
                files = {name: zf.read(name).decode() for name in zf.namelist() if not name.endswith("/")}
        self.jobs[sid] = FakeJob(sid, str(req.get("entrypoint") or ""), runtime_env, dict(req.get("metadata") or {}), files=files)
        return 200, {"submission_id": sid, "job_id": None}
