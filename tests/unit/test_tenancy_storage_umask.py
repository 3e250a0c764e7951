"""What the job processes create on shared job storage is group-writable and never world-accessible
(umask 0007): Ray runs as uid 1000 and the operator as uid 65532, both in the storage group, and
the operator's TTL cleanup must be able to delete everything under a finished job's `runs/`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from graft.cli.main import main as graft_cli
from graft.jobs.__main__ import main as job_entrypoint
from graft.operator.builders import build_rayjob
from graft.storage import STORAGE_UMASK, set_storage_umask
from tests.unit.test_operator_golden import SETTINGS, job

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


@pytest.fixture
def world_readable_umask() -> Iterator[None]:
    """The process starts with the usual 0022 (what Ray's containers run with) and gets it back after."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_the_job_entrypoint_sets_the_storage_umask_before_anything_else(world_readable_umask: None, tmp_path: Path) -> None:
    assert job_entrypoint(["--spec", str(tmp_path / "missing.yaml"), "--result", str(tmp_path / "result.json")]) == 2
    assert _umask() == STORAGE_UMASK == 0o007


def test_graft_run_sets_the_storage_umask_before_anything_else(world_readable_umask: None, tmp_path: Path) -> None:
    assert graft_cli(["run", str(tmp_path / "missing.yaml"), "--runs", str(tmp_path / "runs")]) == 2
    assert _umask() == STORAGE_UMASK


def test_a_directory_made_under_the_storage_umask_is_removable_by_the_group_and_closed_to_others(
    world_readable_umask: None, tmp_path: Path
) -> None:
    set_storage_umask()
    made = tmp_path / "runs" / "trial_0" / "checkpoint_000000"
    made.mkdir(parents=True)
    (made / "model.pt").write_bytes(b"x")
    for path in (made, made / "model.pt"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & stat.S_IWGRP and not mode & stat.S_IRWXO, oct(mode)


def test_every_ray_container_of_a_rayjob_starts_ray_under_the_storage_umask() -> None:
    spec = build_rayjob(job(), SETTINGS)["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
    assert containers and all(c["args"] == ["umask 0007"] for c in containers)
