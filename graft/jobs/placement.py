"""Free the CPUs of stopped trials: remove Train placement groups whose owner is gone.

When Tune stops a trial (ASHA) it kills the trial's actor, and with it the Train controller; the
controller's placement group outlives it (placement groups belong to the job). Ray Train's detached
PlacementGroupCleaner frees it only if the Ray state API answers (dashboard, RAY_ADDRESS). The Tune
callback in graft.jobs.tracker calls these instead.
"""

from __future__ import annotations

import time
from typing import Any

import ray


def release_placement_group(pg_hex: str) -> bool:
    """Remove a stopped trial's Train worker placement group if it is still held.

    When Tune stops a trial (ASHA) it kills the trial's actor, and with it the Train controller;
    the controller's placement group outlives it (placement groups belong to the job). Ray Train's
    detached PlacementGroupCleaner frees it only if the Ray state API answers, which needs the
    dashboard and, on a machine with several Ray clusters, RAY_ADDRESS. Without this the stopped
    trial's CPUs stay reserved and the next trials never start.
    """
    if not pg_hex:
        return False
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex)))
    state = ray.util.placement_group_table(pg).get("state")
    if state in (None, "REMOVED"):
        return False
    remove_placement_group(pg)
    return True


def _actor_placement_groups() -> list[Any]:
    """This job's live placement groups that an actor (not a driver) created, as GCS records."""
    from ray._private.state import state as global_state
    from ray.core.generated import gcs_pb2

    job_id = ray.get_runtime_context().get_job_id()
    out = []
    for raw in global_state._connect_and_get_accessor().get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if info.is_detached or info.state == gcs_pb2.PlacementGroupTableData.REMOVED:
            continue
        if info.creator_job_id.hex() != job_id:
            continue
        if not info.creator_actor_id or ray.ActorID(info.creator_actor_id).is_nil():
            continue  # created by a driver (e.g. Tune's own trial groups), not by an actor
        out.append(info)
    return out


def release_orphaned_placement_groups() -> list[str]:
    """Remove this job's placement groups whose creating actor is dead (e.g. a killed Train controller).

    The same rule as Ray Train's PlacementGroupCleaner, read from the GCS instead of the state API:
    a stopped trial's controller can start a new worker group (and placement group) in the moment
    between losing its workers and being killed itself. Detached groups and other jobs' groups are
    never touched. Returns the ids removed.
    """
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = []
    for info in _actor_placement_groups():
        if info.creator_actor_dead:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(info.placement_group_id)))
            removed.append(info.placement_group_id.hex())
    return removed


def final_sweep(timeout_s: float = 15.0) -> None:
    """After tuning, wait (briefly) for every trial's actor-created placement group to go, freeing orphans."""
    deadline = time.monotonic() + timeout_s
    while True:
        release_orphaned_placement_groups()
        if not _actor_placement_groups() or time.monotonic() >= deadline:
            return
        time.sleep(0.5)
