"""Hostile tenant on the real node with NetworkPolicy enforced (issue 21, finding 5, follow-up of
test_tenancy_ray_auth_kuberay.py): a pod in another namespace cannot even open a TCP connection to
the Ray head of a FineTuneJob (dashboard 8265, GCS 6379, Ray client 10001), while the owner's job,
submitted by the out-of-cluster KubeRay operator from the node (HTTPMode), runs to the end.

The node's bridge CNI does not enforce NetworkPolicy; this module runs kube-router's firewall as a
host process on the node (testbed/netpol_enforcer.py), for its own tests only. The policy is the one
the operator creates for every Graft Ray cluster (`<name>-ray-ingress`,
graft/operator/builders/netpol.py). Without the enforcer the same pod reaches the dashboard and only
token authentication refuses it (test_tenancy_ray_auth_kuberay.py); the attacker pod's reach to a
pod no policy selects (CoreDNS, through its Service) shows that its network works.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Iterator

import pytest

from testbed import nodeconfig as cfg
from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.netpol_enforcer import NetpolEnforcer
from testbed.process import wait_until
from tests.kuberay.release import Release, installed
from tests.kuberay.victim import NAME, run_script_in_pod, start_victim_job, victim_finished

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.tenancy, pytest.mark.slow, pytest.mark.timeout(2400)]

POLICY = f"{NAME}-ray-ingress"
HEAD_PORTS = {"dashboard": 8265, "gcs": 6379, "client": 10001}
DNS = f"{cfg.DNS_IP}:53"
# Run by the attacker pod: a TCP connect to each HOST:PORT of argv[1:]; prints {target: outcome},
# the outcome "open", "refused", "timeout" or the error's text.
PROBE = """
import json, socket, sys
def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return str(exc)
print(json.dumps({t: probe(t) for t in sys.argv[1:]}))
"""


@pytest.fixture(scope="module")
def enforcer(kube_node: KubeNode) -> Iterator[NetpolEnforcer]:
    """kube-router's firewall on the node for this module; stopped and its rules removed after."""
    enf = NetpolEnforcer(kube_node).start()
    try:
        yield enf
    finally:
        left = enf.stop()
        assert not left, f"kube-router's cleanup left chains or ipsets: {left}"


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            enforcer: NetpolEnforcer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "ray-netpol") as rel:
        yield rel


@pytest.fixture(scope="module")
def attacker_ns(control_plane: ControlPlane, release: Release) -> Iterator[str]:
    ns = control_plane.create_namespace(prefix="team-a")
    try:
        yield ns
    finally:
        control_plane.delete_namespace(ns, wait=True, timeout=120)


def connects_from_node(ip: str, port: int) -> bool:
    """A TCP connection from this host (the node: where the KubeRay operator and the kubelet run)."""
    try:
        socket.create_connection((ip, port), timeout=10).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def outcome(release: Release, attacker_ns: str, enforcer: NetpolEnforcer) -> dict[str, Any]:
    """The victim's job applied; once its head runs the Ray job and the enforcer filters the head's
    ingress through the policy, the probes from the other namespace and from the node; the job
    followed to its end."""
    ip = start_victim_job(release)
    wait_until(lambda: enforcer.enforces(ip, POLICY), timeout=120, interval=1,
               what=f"kube-router to filter {ip} through {POLICY}")
    targets = [f"{ip}:{port}" for port in HEAD_PORTS.values()] + [DNS]
    probes = run_script_in_pod(release, attacker_ns, "probe-team-b", PROBE, targets)
    from_node = {name: connects_from_node(ip, port) for name, port in HEAD_PORTS.items()}
    ftj = victim_finished(release)
    head = {name: probes[f"{ip}:{port}"] for name, port in HEAD_PORTS.items()}
    return {"head": head, "dns": probes[DNS], "from_node": from_node, "ftj": ftj}


def test_a_pod_of_another_tenant_cannot_connect_to_the_ray_heads_dashboard(outcome: dict[str, Any]) -> None:
    assert outcome["head"]["dashboard"] in ("refused", "timeout"), outcome["head"]


def test_a_pod_of_another_tenant_cannot_connect_to_the_ray_heads_gcs(outcome: dict[str, Any]) -> None:
    assert outcome["head"]["gcs"] in ("refused", "timeout"), outcome["head"]


def test_a_pod_of_another_tenant_cannot_connect_to_the_ray_client_port(outcome: dict[str, Any]) -> None:
    assert outcome["head"]["client"] in ("refused", "timeout"), outcome["head"]


def test_the_attackers_pod_reaches_a_pod_no_policy_selects(outcome: dict[str, Any]) -> None:
    """CoreDNS through the kube-dns Service: the refusals above are the policy's, not a dead network."""
    assert outcome["dns"] == "open", outcome


def test_the_node_reaches_the_ray_head_for_kuberay_and_the_kubelet(outcome: dict[str, Any]) -> None:
    assert outcome["from_node"] == {"dashboard": True, "gcs": True, "client": True}, outcome["from_node"]


def test_the_owners_job_runs_to_the_end_under_the_enforced_policy(outcome: dict[str, Any]) -> None:
    st = outcome["ftj"]["status"]
    assert st["phase"] == "Succeeded", json.dumps(st, indent=1)[-3000:]
