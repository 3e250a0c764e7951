"""``python3 -m testbed.cluster up|down|status``: the one-node cluster for a person
(scripts/cluster.sh is the entry point; it builds the binaries first).

``up`` starts a control plane and the node detached from this process, writes their PIDs
to ``$GRAFT_NODE_DIR/cluster.json`` and prints ``KUBECONFIG=<file>``; ``down`` stops them
and undoes every host change; ``status`` says what is running. All three hold the
machine-wide node lock while they work, and the pytest fixture refuses to start while a
cluster from ``up`` is running.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from testbed.binaries import NODE_COMPONENTS, ensure_binaries, find_kubectl
from testbed.controlplane import ControlPlane
from testbed.kubenode import LOCK_FILE, NODE_DIR, NODE_IP, KubeNode
from testbed.nodehost import _cmdline

STATE = NODE_DIR / "cluster.json"


@contextmanager
def node_lock(timeout: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide node lock (waiting up to ``timeout`` seconds)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as f:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{LOCK_FILE} still held after {timeout:.0f}s: another "
                                       "test session or scripts/cluster.sh owns the node") from None
                if not told:
                    print(f"waiting for the node lock {LOCK_FILE} ...", file=sys.stderr)
                    told = True
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running_cluster() -> dict | None:
    """The state of a cluster started by ``up`` whose API server is still alive."""
    if not STATE.exists():
        return None
    state = json.loads(STATE.read_text())
    pid = state["controlplane"]["pids"].get("kube-apiserver")
    return state if pid and "kube-apiserver" in _cmdline(pid) else None


def up() -> int:
    state = running_cluster()
    if state:
        print(f"already up\nKUBECONFIG={state['kubeconfig']}")
        return 0
    if STATE.exists():
        down()
    ensure_binaries(NODE_COMPONENTS)
    cp = ControlPlane(node_ip=NODE_IP, detached=True)
    cp.start(crds=ControlPlane.kuberay_crd_paths())
    try:
        node = KubeNode(cp, detached=True).start()
    except BaseException:
        cp.stop()
        raise
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps({
        "controlplane": {"pids": cp.pids(), "workdir": str(cp.workdir)},
        "kubeconfig": str(cp.kubeconfig), "bin": str(cp.bin_dir), "timings": {**cp.timings, **node.timings},
    }, indent=2))
    print(f"node graft-node Ready; timings (s): {json.dumps({**cp.timings, **node.timings})}", file=sys.stderr)
    print(f"KUBECONFIG={cp.kubeconfig}")
    return 0


def down() -> int:
    state = json.loads(STATE.read_text()) if STATE.exists() else None
    bin_dir = Path(state["bin"]) if state else ensure_binaries(NODE_COMPONENTS)["bin"]
    cp = ControlPlane(node_ip=NODE_IP)
    cp.bin_dir = bin_dir
    left = KubeNode(cp, bin_dir).stop()
    if state:
        ControlPlane.stop_pids(state["controlplane"]["pids"], state["controlplane"]["workdir"])
        STATE.unlink()
    if left:
        print(f"left behind: {json.dumps(left)}", file=sys.stderr)
        return 1
    print("down: no processes, mounts, cgroups or iptables chains left", file=sys.stderr)
    return 0


def status() -> int:
    state = running_cluster()
    if not state:
        print("down")
        return 3
    env = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
    print(f"up\nKUBECONFIG={state['kubeconfig']}")
    os.execvpe(find_kubectl(), [find_kubectl(), "get", "nodes,pods", "-A", "-o", "wide"], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster.sh", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    if args.command == "status":
        return status()
    with node_lock():
        return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
