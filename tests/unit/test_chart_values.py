"""The chart's static parts, checked without helm: documented values, CRDs, versions, settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kopf._cogs.structs import references

import graft
from graft.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "graft"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")


def undocumented_values(text: str) -> list[str]:
    """Keys of values.yaml that carry no `# --` comment themselves or on an ancestor, except
    plain groups (maps whose own keys are all documented)."""
    lines = text.splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, path, documented)
    missing: list[str] = []
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        comments: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comments.append(lines[j].strip())
            j -= 1
        documented = any(c.startswith("# --") for c in comments)
        covered = documented or any(d for _, _, d in stack)
        path = ".".join([p for _, p, _ in stack[-1:]] + [m["key"]]) if stack else m["key"]
        rest = m["rest"].split("#", 1)[0].strip()
        following = [ln for ln in lines[i + 1:] if ln.strip() and not ln.strip().startswith("#")]
        child = KEY.match(following[0]) if following else None
        is_group = rest == "" and child is not None and len(child["indent"]) > indent
        if not covered and not is_group:
            missing.append(path)
        stack.append((indent, path, covered))
    return missing


def test_every_value_is_documented() -> None:
    assert undocumented_values((CHART / "values.yaml").read_text()) == []


def test_undocumented_value_is_detected() -> None:
    text = "image:\n  # -- Repo.\n  repository: x\n  tag: y\n# -- Documented.\nreplicas: 1\nbare: 2\n"
    assert undocumented_values(text) == ["image.tag", "bare"]


def test_chart_app_version_matches_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == graft.__version__
    assert chart["apiVersion"] == "v2"


def test_operator_values_default_to_the_operator_settings_defaults() -> None:
    operator = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]
    defaults = OperatorSettings()
    assert operator["rayImage"] == defaults.ray_image
    assert operator["rayImagePullPolicy"] == defaults.image_pull_policy
    assert operator["storageMountPath"] == defaults.storage_mount_path
    assert operator["resyncSeconds"] == defaults.resync_seconds
    assert (operator["headCpu"], operator["headMemory"]) == (defaults.head_cpu, defaults.head_memory)
    assert (operator["workerMemory"], operator["serveMemory"]) == (defaults.worker_memory, defaults.serve_memory)
    assert operator["submissionMode"] == defaults.submission_mode


def test_chart_ships_graft_and_kopf_peering_crds() -> None:
    names = {
        d["metadata"]["name"]
        for f in (CHART / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    assert {"finetunejobs.graft.dev", "modelendpoints.graft.dev", "finetunepolicies.graft.dev"} <= names
    # The group/plural kopf itself looks for (kopf.dev, not the legacy zalando.org).
    for selector in (references.CLUSTER_PEERINGS_K, references.NAMESPACED_PEERINGS_K):
        assert f"{selector.any_name}.{selector.group}" in names


def test_peering_crd_scopes_match_kopf() -> None:
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all((CHART / "crds" / "kopf.dev.yaml").read_text()) if d}
    assert docs["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert docs["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
