"""A killed actor's placement group is freed by graft's sweep (Ray Train's own cleaner needs the state API)."""

from __future__ import annotations

import time

import pytest

from graft.jobs.tune import release_orphaned_placement_groups

pytestmark = pytest.mark.e2e


def test_placement_group_of_a_killed_creator_is_released_and_live_ones_are_kept(ray_cluster: dict) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

    @ray.remote(num_cpus=0)
    class Creator:
        def make(self) -> str:
            pg = placement_group([{"CPU": 0.5}])
            ray.get(pg.ready())
            return pg.id.hex()

    doomed, alive = Creator.remote(), Creator.remote()
    doomed_pg = ray.get(doomed.make.remote())
    alive_pg = ray.get(alive.make.remote())
    ray.kill(doomed)

    deadline = time.monotonic() + 60
    removed: list[str] = []
    while doomed_pg not in removed and time.monotonic() < deadline:
        removed += release_orphaned_placement_groups()
        time.sleep(0.5)

    assert doomed_pg in removed
    table = placement_group_table()
    assert table[doomed_pg]["state"] == "REMOVED"
    assert table[alive_pg]["state"] == "CREATED"
    ray.kill(alive)
    remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(alive_pg))))
