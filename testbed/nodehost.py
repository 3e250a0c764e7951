"""Host-wide state of the one-node cluster: network set-up and a complete teardown.

The kubelet, kube-proxy, containerd and the CNI plugins change things outside their own
directories: a bridge, iptables chains (``KUBE-*``, ``CNI-*``, ours ``GRAFT-*``), cgroups
under ``kubepods``, mounts under the node directory and a few sysctls (the kubelet sets
``vm.overcommit_memory``, ``kernel.panic`` and friends; pod routing needs
``net.ipv4.ip_forward``). :func:`setup_network` records the sysctls' old values in a
file under the node directory; :func:`teardown` undoes everything and is safe to run
again (it is also how a crashed run is cleaned up).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable

BRIDGE = "graft0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
CHAIN_PREFIXES = ("KUBE-", "CNI-", "GRAFT-")
EGRESS_CHAIN = "GRAFT-EGRESS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Set by us (ip_forward) or by the kubelet (setupKernelTunables) / kube-proxy; restored on teardown.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


class NodeHostError(RuntimeError):
    """A host command failed; the message names the command and its output."""


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NodeHostError(f"{' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc


def _sysctl(name: str, value: str | None = None) -> str | None:
    path = Path("/proc/sys") / name
    if not path.exists():
        return None
    if value is not None:
        path.write_text(value)
    return path.read_text().strip()


def setup_network(node_dir: Path) -> None:
    """Save the sysctls, create the bridge with the node IP, turn on forwarding and
    bridge netfilter, and drop pod traffic to anything beyond the node."""
    saved = node_dir / "sysctls.json"
    if not saved.exists():  # keep the first (pre-cluster) values across retries
        saved.write_text(json.dumps({n: _sysctl(n) for n in SYSCTLS}))
    if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    _sysctl("net/ipv4/ip_forward", "1")
    for n in ("net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"):
        _sysctl(n, "1")
    # Pods may talk to pods, Services (DNAT'd to pods or the node) and the node; nothing
    # they send is forwarded off the machine.
    if run("iptables", "-n", "-L", EGRESS_CHAIN, check=False).returncode != 0:
        run("iptables", "-N", EGRESS_CHAIN)
        run("iptables", "-A", EGRESS_CHAIN, "-d", POD_CIDR, "-j", "RETURN")
        run("iptables", "-A", EGRESS_CHAIN, "-j", "DROP")
        run("iptables", "-I", "FORWARD", "1", "-s", POD_CIDR, "-j", EGRESS_CHAIN)


# ------------------------------------------------------------------ teardown
def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_pid(pid: int, expect: str, timeout: float = 10.0) -> None:
    """SIGTERM the process group of ``pid`` (only if its command line contains
    ``expect``, so a recycled PID is never hit), SIGKILL after ``timeout``."""
    if expect not in _cmdline(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and expect in _cmdline(pid):
        time.sleep(0.1)
    if expect in _cmdline(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_referencing(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (e.g. our containerd socket: the shims)."""
    own = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != own
            and text in _cmdline(int(p))]


def _kubepods_dirs() -> list[Path]:
    """Every kubepods cgroup directory, deepest first, in all v1 hierarchies and v2."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
        top = hierarchy / "kubepods"
        if top.is_dir() and not hierarchy.is_symlink():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pods_processes() -> None:
    for d in _kubepods_dirs():
        procs = d / "cgroup.procs"
        if procs.exists():
            kill_pids(int(x) for x in procs.read_text().split())


def remove_cgroups(timeout: float = 10.0) -> list[str]:
    """rmdir every kubepods cgroup (retrying while processes exit); returns leftovers."""
    deadline = time.monotonic() + timeout
    while True:
        kill_pods_processes()
        left = []
        for d in _kubepods_dirs():
            try:
                d.rmdir()
            except OSError:
                left.append(str(d))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or under ``prefix``, deepest first."""
    out = []
    pre = str(prefix).rstrip("/")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == pre or point.startswith(pre + "/"):
            out.append(point)
    return sorted(set(out), key=lambda p: p.count("/"), reverse=True)


def unmount_all(prefix: Path) -> list[str]:
    """Unmount everything under ``prefix`` (lazily when busy); returns what is left."""
    for _ in range(5):
        points = mounts_under(prefix)
        if not points:
            return []
        for p in points:
            if run("umount", p, check=False).returncode != 0:
                run("umount", "-l", p, check=False)
    return mounts_under(prefix)


def iptables_leftovers() -> dict[str, list[str]]:
    """Our chains still present, per '<binary> <table>'."""
    left: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            p = run(binary, "-t", table, "-S", check=False)
            chains = [ln.split()[1] for ln in p.stdout.splitlines()
                      if ln.startswith("-N ") and ln.split()[1].startswith(CHAIN_PREFIXES)]
            if chains:
                left[f"{binary} {table}"] = chains
    return left


def remove_chains() -> None:
    """Delete the jumps into our chains from the built-in chains, then flush and delete them."""
    for key, chains in iptables_leftovers().items():
        binary, table = key.split()
        rules = run(binary, "-t", table, "-S", check=False).stdout.splitlines()
        for ln in rules:
            parts = shlex.split(ln)  # comments with spaces are quoted: `-m comment --comment "a b"`
            if parts[:1] == ["-A"] and not parts[1].startswith(CHAIN_PREFIXES) and any(
                c in parts for c in chains
            ):
                run(binary, "-t", table, "-D", *parts[1:], check=False)
        for c in chains:
            run(binary, "-t", table, "-F", c, check=False)
        for c in chains:
            run(binary, "-t", table, "-X", c, check=False)


def restore_sysctls(node_dir: Path) -> None:
    saved = node_dir / "sysctls.json"
    if not saved.exists():
        return
    for name, value in json.loads(saved.read_text()).items():
        if value is not None and _sysctl(name) != value:
            _sysctl(name, value)
    saved.unlink()


def teardown(node_dir: Path, run_dir: Path, containerd_socket: Path) -> dict[str, object]:
    """Everything after the node's processes were asked to stop: kill what is left of the
    pods and shims, unmount, remove cgroups, iptables chains and the bridge, restore the
    sysctls. Returns what could not be removed (empty when clean)."""
    kill_pods_processes()
    kill_pids(pids_referencing(str(containerd_socket)))
    kill_pids(pids_referencing(str(run_dir)))
    left_mounts = unmount_all(run_dir)
    left_cgroups = remove_cgroups()
    remove_chains()
    for veth in re.findall(rf"^\d+: (veth[0-9a-f]+)@\S+ .* master {BRIDGE} ",
                           run("ip", "-o", "link").stdout, re.M):
        run("ip", "link", "del", veth, check=False)
    run("ip", "link", "del", BRIDGE, check=False)
    restore_sysctls(node_dir)
    problems = {"mounts": left_mounts, "cgroups": left_cgroups,
                "iptables": iptables_leftovers(),
                "processes": pids_referencing(str(run_dir))}
    return {k: v for k, v in problems.items() if v}
