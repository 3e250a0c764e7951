"""Hostile tenant on the real node: shell metacharacters in a FineTuneJob's text fields are text,
never commands, in both of KubeRay's submission modes (HTTPMode: KubeRay posts the entrypoint to the
dashboard; K8sJobMode, KubeRay's default: a submitter pod runs `ray job submit` through a shell).

The operator passes the spec and the result URI base64-encoded (graft.api.argcodec), so no tenant
byte appears raw in the entrypoint. Each case installs the mode, applies the smoke job with label
names full of `$(...)`, backticks, quotes, `;` and newlines whose commands would create marker files
in the tenant's part of the storage (where the job's own result.json lands), lets KubeRay run it, and reads back the job's result.json: the label
names arrive byte-for-byte and no marker exists. A change of submission path or KubeRay version that
put tenant text through a shell fails here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.integration.rbac import CHART, helm
from tests.kuberay.diagnose import waiting
from tests.kuberay.release import RELEASE, Release, installed, leftovers
from tests.kuberay.test_smoke_kuberay import smoke_job

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.tenancy, pytest.mark.slow, pytest.mark.timeout(2400)]


def payloads(part: Path) -> list[str]:
    """Two label names; every command in them would create a file `pwned-*` in `part`, the tenant's
    part of the storage, which the Ray pods write (the job's result.json lands there)."""
    m = f"{part}/pwned"
    return [
        f"$(touch {m}-dollar)`touch {m}-tick`${{IFS}}'",
        f"\"; touch {m}-semi; echo '\n&& touch {m}-newline || touch {m}-or | tee {m}-pipe #",
    ]


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "shell") as rel:
        yield rel


def use_submission_mode(release: Release, mode: str) -> None:
    """`helm upgrade` the operator to `mode`; returns once the only operator pod runs with it."""
    helm("upgrade", RELEASE, str(CHART), "--namespace", release.namespace, "--reuse-values",
         "--set", f"operator.submissionMode={mode}", "--kubeconfig", str(release.cp.kubeconfig))

    def only_new_pod() -> bool:
        pods = release.items("pods", namespace=release.namespace)
        args = [a for p in pods for c in p["spec"]["containers"] for a in c.get("args") or []]
        ready = all(any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
                    for p in pods)
        return len(pods) == 1 and ready and f"--submission-mode={mode}" in args

    wait_until(only_new_pod, timeout=300, interval=2, what=f"the operator to run with --submission-mode={mode}")


def run_job(release: Release, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply the smoke job (serving off) with the payload label names; (its RayJob, its result.json)."""
    doc = smoke_job()
    doc["metadata"]["name"] = name
    doc["spec"]["dataset"]["labelNames"] = payloads(release.storage / release.tenant)
    doc["spec"]["serving"] = {"enabled": False}  # no ModelEndpoint: only the job is under test
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(doc))
    rayjob = wait_until(lambda: release.get("rayjob", name), timeout=120, interval=2, what=f"the RayJob of {name}")

    def ended() -> dict[str, Any] | None:
        ftj = release.get("finetunejob", name) or {}
        return ftj if (ftj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Rejected") else None

    ftj = wait_until(ended, timeout=1200, interval=3, what=waiting(release, f"FineTuneJob {name} to finish"))
    assert ftj["status"]["phase"] == "Succeeded", json.dumps(ftj["status"], indent=1)[-3000:]
    result = json.loads((release.storage / release.tenant / f"{name}-{ftj['metadata']['uid'][:8]}" / "result.json").read_text())
    release.kubectl("delete", "finetunejob", name, "-n", release.tenant)
    wait_until(lambda: not leftovers(release), timeout=300, interval=3, what=waiting(release, "the tenant namespace to be empty"))
    return rayjob, result


@pytest.mark.parametrize("mode", ["HTTPMode", "K8sJobMode"])
def test_shell_metacharacters_in_the_spec_reach_the_job_as_text(release: Release, mode: str) -> None:
    use_submission_mode(release, mode)
    t0 = time.monotonic()
    rayjob, result = run_job(release, f"shell-{mode.lower()}")
    release.timings[f"{mode} job"] = time.monotonic() - t0
    assert rayjob["spec"]["submissionMode"] == mode
    assert "touch" not in rayjob["spec"]["entrypoint"]  # the spec travels encoded
    assert result["labelNames"] == payloads(release.storage / release.tenant)  # byte-for-byte
    assert not list(release.storage.rglob("pwned*")), "a command in the spec ran"
