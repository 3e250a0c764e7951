"""`graft logs NAME [-n NS]`: the training log of a FineTuneJob, live or after it finished.

Where the log comes from, in order:
1. the Ray job itself, through the Job Submission API of the dashboard in the job's status
   (`status.dashboardUrl` + `status.jobSubmissionId`; on a shared cluster the Ray job is kept
   until the FineTuneJob is deleted; a RayJob's cluster lives until its TTL);
2. the copy the operator wrote next to the result when the job ended (`status.logUri`).

The FineTuneJob is read with `kubectl` (the user's kubeconfig and credentials), so the light core
install needs no Kubernetes client library. The dashboard of a KubeRay cluster is an in-cluster address: from outside, port-forward it
(`kubectl port-forward svc/CLUSTER-head-svc 8265`) and pass `--dashboard http://127.0.0.1:8265`.

Graft's Ray clusters require their token (graft.operator.rayauth). `graft logs` presents
`--token`/`$RAY_AUTH_TOKEN`, else the key `auth_token` of the cluster's token Secret, read with
`kubectl` as the user: only a user who may read Secrets in the namespace gets it; without it the
dashboard refuses (401) and the copy on storage is printed instead.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import subprocess
import sys
from typing import Any

TERMINAL_PHASES = ("Succeeded", "Failed", "Rejected")


def add_parser(sub: Any, lazy: Any) -> None:
    p = sub.add_parser("logs", help="print the training log of a FineTuneJob (also after it finished)")
    p.add_argument("name", help="FineTuneJob name")
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, as kubectl chooses)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: as kubectl chooses: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--dashboard", help="Ray dashboard URL to read from instead of status.dashboardUrl (e.g. a port-forward)")
    p.add_argument("-f", "--follow", action="store_true", help="stream new lines as they are written, until the Ray job ends")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="print only the last N lines")
    p.add_argument("--token", default=os.environ.get("RAY_AUTH_TOKEN"),
                   help="the Ray cluster's auth token (default: $RAY_AUTH_TOKEN, else read from the cluster's token "
                        "Secret with kubectl, when you may read Secrets in the namespace)")
    p.set_defaults(func=lazy("graft.cli.logs", "main"))


def _kubectl(args: argparse.Namespace, *cmd: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the user's kubeconfig and credentials (graft logs needs no Kubernetes client library)."""
    kubeconfig = ["--kubeconfig", args.kubeconfig] if args.kubeconfig else []
    namespace = ["-n", args.namespace] if args.namespace else []
    try:
        return subprocess.run(["kubectl", *kubeconfig, *namespace, *cmd], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise LogsError("kubectl is not on PATH; graft logs reads the FineTuneJob through kubectl") from exc


class LogsError(RuntimeError):
    """The FineTuneJob cannot be read; the message says why."""


def _finetunejob(args: argparse.Namespace) -> dict[str, Any]:
    proc = _kubectl(args, "get", "finetunejob", args.name, "-o", "json")
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"kubectl exited {proc.returncode}"
        hint = " (check -n NAMESPACE)" if "NotFound" in proc.stderr else ""
        raise LogsError(f"cannot read FineTuneJob {args.name}: {reason}{hint}")
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the token in the job's Ray token Secret as the user may read it; None when the
    user cannot (or the cluster is not one Graft created)."""
    from graft.operator.names import ray_name
    from graft.operator.rayauth import AUTH_TOKEN_KEY, auth_secret_name

    if args.token:
        return str(args.token)
    proc = _kubectl(args, "get", "secret", auth_secret_name(ray_name(args.name)), "-o", "json")
    if proc.returncode != 0:
        return None
    try:
        data = (json.loads(proc.stdout).get("data") or {}).get(AUTH_TOKEN_KEY)
        return base64.b64decode(data, validate=True).decode() if data else None
    except (ValueError, binascii.Error, AttributeError):  # not JSON, not base64, not an object
        return None


def _http(url: str) -> str:
    return url if "://" in url else f"http://{url}"


def _tail(text: str, n: int | None) -> str:
    if n is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:]) if n > 0 else ""


def _read_copy(uri: str) -> str | None:
    from graft import storage

    try:
        return storage.read_text(uri)
    except OSError:  # missing, unreachable, or no client for the scheme
        return None


def main(args: argparse.Namespace) -> int:
    from graft.operator.shared.jobs import ClusterUnavailable, RayJobs

    try:
        obj = _finetunejob(args)
    except LogsError as exc:
        print(f"graft logs: {exc}", file=sys.stderr)
        return 1
    ns = obj["metadata"]["namespace"]
    st = obj.get("status") or {}
    sid = st.get("jobSubmissionId")
    dashboard = args.dashboard or st.get("dashboardUrl")
    problems: list[str] = []
    token = _token(args) if sid and dashboard else None
    if sid and dashboard:
        api = RayJobs(_http(dashboard), token=token)
        try:
            # Only a job the cluster still knows has its log there.
            text = api.logs(sid) if api.info(sid) is not None else None
        except ClusterUnavailable as exc:
            text = None
            problems.append(str(exc))
        if text or (args.follow and text is not None):  # empty and not following: the copy may have more
            sys.stdout.write(_tail(text, args.tail))
            sys.stdout.flush()
            if args.follow:
                return _follow(dashboard, sid, len(text), token)
            return 0
        if not problems:
            problems.append(f"the Ray cluster at {dashboard} has no log of job {sid} (any more)")
    elif not sid:
        problems.append(f"no Ray job yet (phase {st.get('phase') or 'Pending'}: {st.get('message') or 'not started'})")
    else:
        problems.append("status.dashboardUrl is empty: pass --dashboard URL")
    copy = st.get("logUri")
    if copy:
        text = _read_copy(copy)
        if text is not None:
            sys.stdout.write(_tail(text, args.tail))
            return 0
        problems.append(f"the log copy {copy} is not readable from here")
    hint = ""
    if st.get("rayClusterName") and not args.dashboard:
        hint = (f"\n  hint: kubectl -n {ns} port-forward svc/{st['rayClusterName']}-head-svc 8265 &&"
                f" graft logs {args.name} -n {ns} --dashboard http://127.0.0.1:8265")
    print(f"graft logs: no log for FineTuneJob {ns}/{args.name}: " + "; ".join(problems) + hint, file=sys.stderr)
    return 1


def _follow(dashboard: str, sid: str, printed: int, token: str | None = None) -> int:
    """Stream the log as Ray writes it (the dashboard's websocket tail), until the Ray job ends.

    The tail starts at the beginning of the log: the first `printed` characters were printed already.
    """
    import websocket  # websocket-client

    from graft.operator.rayauth import auth_headers

    url = _http(dashboard).replace("http", "ws", 1).rstrip("/") + f"/api/jobs/{sid}/logs/tail"
    try:
        ws = websocket.create_connection(url, timeout=None, header=[f"{k}: {v}" for k, v in auth_headers(token).items()])
    except (OSError, websocket.WebSocketException) as exc:
        print(f"graft logs: cannot follow the log at {url}: {exc}", file=sys.stderr)
        return 1
    skip = printed
    try:
        while True:
            try:
                chunk = ws.recv()
            except websocket.WebSocketConnectionClosedException:
                return 0  # Ray closes the tail when the job has ended
            if not chunk:
                return 0
            text = chunk.decode(errors="replace") if isinstance(chunk, bytes) else str(chunk)
            if skip:
                dropped = min(skip, len(text))
                text, skip = text[dropped:], skip - dropped
            sys.stdout.write(text)
            sys.stdout.flush()
    finally:
        ws.close()
