"""A real local Ray head for the shared-cluster tests and benchmarks: own temp dir, own ports, stopped by killing
only the processes it started (never `ray stop`, which stops every Ray of the user on the machine).

    head = RayHead(resources={"tune_driver": 2}).start()
    head.dashboard_url   # http://127.0.0.1:PORT, for the Job Submission and Serve REST APIs
    head.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from testbed.ports import free_port_block, free_ports
from testbed.process import Process

VENV_BIN = Path(sys.executable).parent
_CACHE = Path(os.environ.get("GRAFT_CACHE", Path.home() / ".cache" / "graft"))

# Environment of the head and so of every job driver, worker and Serve replica it starts.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a token left in ~/.ray by a local ray.init() must not apply here
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(_CACHE / "torch-extensions")),
    "PYTHONUNBUFFERED": "1",
}


def _children(pids: set[int]) -> set[int]:
    """`pids` and all their descendants (from /proc)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
    found = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _pids_with(marker: str) -> set[int]:
    """Processes whose command line or environment names `marker` (our temp dir)."""
    out: set[int] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            out.add(int(entry.name))
    return out


class RayHead:
    """`ray start --head --block` in its own session, on loopback, with its own ports and temp dir."""

    def __init__(self, num_cpus: int = 2, resources: dict[str, float] | None = None) -> None:
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        # Short: Ray puts unix sockets under it (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="gsr-", dir="/tmp")
        # Every port of a head at once, all different (Ray refuses two components on one port).
        (self.port, self.dashboard_port, self.client_port, self.serve_port, self._node_manager_port, self._object_manager_port,
         self._agent_port, self._agent_grpc_port, self._runtime_env_port, self._metrics_port) = free_ports(10)
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        self.process: Process | None = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join someone else's cluster
        return {**env, **RAY_ENV, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"}

    def start(self, timeout: float = 120.0) -> "RayHead":
        low, high = free_port_block()
        argv = [
            str(VENV_BIN / "ray"), "start", "--head", "--block",
            "--temp-dir", self.temp_dir,
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.port),
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(self.client_port),
            "--node-manager-port", str(self._node_manager_port),
            "--object-manager-port", str(self._object_manager_port),
            "--dashboard-agent-listen-port", str(self._agent_port),
            "--dashboard-agent-grpc-port", str(self._agent_grpc_port),
            "--runtime-env-agent-port", str(self._runtime_env_port),
            "--metrics-export-port", str(self._metrics_port),
            "--min-worker-port", str(low), "--max-worker-port", str(high),
            "--num-cpus", str(self.num_cpus),
            "--disable-usage-stats",
        ]
        if self.resources:
            argv += ["--resources", json.dumps(self.resources)]
        self.process = Process("ray start", argv, self.log_path, env=self.env, cwd=self.temp_dir, log_mode="wb").start()
        try:
            self.process.wait_ready(self._jobs_api_up, timeout, interval=0.5, what=f"serving the Jobs API at {self.dashboard_url}")
        except RuntimeError:
            self.stop()
            raise
        return self

    def _jobs_api_up(self) -> bool:
        """wait_ready's probe (its errors count as "not yet")."""
        with urllib.request.urlopen(f"{self.dashboard_url}/api/jobs/", timeout=2) as r:
            return r.status == 200

    def own_pids(self) -> set[int]:
        """Every process of this head: its session, whatever names its temp dir, and their children."""
        roots = _pids_with(self.temp_dir)
        if self.process is not None and self.process.running():
            roots.add(self.process.pid)
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if os.getsid(int(entry.name)) == self.process.pid:
                            roots.add(int(entry.name))
                    except (ProcessLookupError, PermissionError):
                        continue
        return _children(roots) - {os.getpid()}

    def __enter__(self) -> RayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM `ray start --block` (it stops its node), then SIGKILL whatever of ours is left."""
        pids = self.own_pids()
        if self.process is not None and self.process.running():
            self.process.signal(signal.SIGTERM, group=False)  # not the group: `ray start` stops its node itself
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for pid in pids | self.own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
        if self.process is not None:
            self.process.wait(timeout=10)
        if not os.environ.get("GRAFT_KEEP_RAY"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process is not None else "(not started)"
