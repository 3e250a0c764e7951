"""The chart's job storage: the claim in the operator pod, the storage root, hostPath volumes for
one-node clusters. Rendered by the real helm (marked integration, like test_chart_render.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.rbac import HelmError, render_chart

pytestmark = pytest.mark.integration

PVC_VALUES = {"operator": {"storagePvc": "graft-storage"}}
HOSTPATH_VALUES = {
    "operator": {"storagePvc": "graft-storage", "storageMountPath": "/srv/graft"},
    "hostPathStorage": {"enabled": True, "path": "/srv/graft", "namespaces": ["team-a"]},
}


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def test_storage_claim_is_mounted_in_the_operator_and_is_the_default_root() -> None:
    pod = _pod(render_chart(PVC_VALUES))
    container = pod["containers"][0]
    assert {"name": "graft-storage", "mountPath": "/mnt/graft"} in container["volumeMounts"]
    assert {"name": "graft-storage", "persistentVolumeClaim": {"claimName": "graft-storage"}} in pod["volumes"]
    assert {"--storage-pvc=graft-storage", "--storage-mount-path=/mnt/graft", "--result-storage=/mnt/graft"} <= set(container["args"])


def test_an_object_store_root_wins_over_the_mount_path() -> None:
    values = {"operator": {"storagePvc": "graft-storage", "resultStorage": "s3://bucket/graft"}}
    args = _pod(render_chart(values))["containers"][0]["args"]
    assert "--result-storage=s3://bucket/graft" in args and "--result-storage=/mnt/graft" not in args


def test_without_storage_the_operator_gets_no_storage_flags() -> None:
    args = _pod(render_chart({}))["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--result-storage", "--storage-pvc"))]


def test_hostpath_storage_binds_one_volume_per_namespace_to_its_claim() -> None:
    docs = render_chart(HOSTPATH_VALUES)
    volumes = {d["spec"]["claimRef"]["namespace"]: d for d in docs if d["kind"] == "PersistentVolume"}
    claims = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert set(volumes) == set(claims) == {"graft-system", "team-a"}
    for ns, pv in volumes.items():
        assert pv["spec"]["claimRef"]["name"] == "graft-storage"
        assert claims[ns]["metadata"]["name"] == "graft-storage"
        assert claims[ns]["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


@pytest.mark.tenancy
def test_hostpath_storage_backs_each_tenant_claim_with_its_own_part_only() -> None:
    """Issue 21, finding 4: every namespace's volume was the same node directory, so a tenant pod
    mounting its own claim saw every tenant's files. The operator's claim keeps the whole root."""
    values = {**HOSTPATH_VALUES, "hostPathStorage": {**HOSTPATH_VALUES["hostPathStorage"], "namespaces": ["team-a", "team-b"]}}
    volumes = {d["spec"]["claimRef"]["namespace"]: d["spec"]["hostPath"] for d in render_chart(values) if d["kind"] == "PersistentVolume"}
    assert volumes == {
        "graft-system": {"path": "/srv/graft", "type": "Directory"},
        "team-a": {"path": "/srv/graft/team-a", "type": "Directory"},
        "team-b": {"path": "/srv/graft/team-b", "type": "Directory"},
    }


@pytest.mark.tenancy
def test_the_operator_joins_the_storage_group_and_passes_it_to_the_ray_pods() -> None:
    pod = _pod(render_chart({"operator": {"storagePvc": "graft-storage", "storageGroup": 3000}}))
    assert 3000 in pod["securityContext"]["supplementalGroups"]
    assert "--storage-group=3000" in pod["containers"][0]["args"]


def test_hostpath_storage_without_a_claim_name_is_refused_with_the_fix() -> None:
    with pytest.raises(HelmError, match="operator.storagePvc"):
        render_chart({"hostPathStorage": {"enabled": True}})


def test_ray_pod_sizes_reach_the_operator_settings() -> None:
    import argparse

    from graft.operator.main import add_arguments, settings_from_args

    values = {"operator": {"headCpu": "300m", "headCpuLimit": "1", "headMemory": "1536Mi", "workerMemory": "2Gi",
                           "serveMemory": "1Gi"}}
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(_pod(render_chart(values))["containers"][0]["args"][1:])
    settings = settings_from_args(args)
    assert (settings.head_cpu, settings.head_cpu_limit, settings.head_memory, settings.worker_memory, settings.serve_memory) == (
        "300m", "1", "1536Mi", "2Gi", "1Gi")
