"""Chaos: the operator SIGKILLed again and again while many jobs run on a shared Ray cluster.

Real control plane, `graft operator` as a subprocess under the chart's ServiceAccount, a real local
Ray head. JOBS small FineTuneJobs (the real MiniLM, one step) are applied, four running at a time;
six of them promote into two endpoints (`promotion: always`, three each). While they run the
operator is SIGKILLed and started again five times, then left to finish. Then nothing
was lost or done twice: one Ray job per FineTuneJob, every job Succeeded with its result read, and
each endpoint's version counts exactly the jobs that promoted into it, each once in its ledger.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graft.operator.builders.endpoint import promotions
from testbed.controlplane import ControlPlane
from testbed.jobdocs import tiny_job, write_sentiment_jsonl
from testbed.ray_head import RayHead
from tests.e2e.chart_operator import ChartOperator, on_shared_head
from tests.integration.helpers import get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1800)]

# 10 jobs by default (8 min 32 s alone on an idle 2-core machine), so that `make test` fits CI's 90
# minutes next to the examples on the real node; GRAFT_CHAOS_JOBS=20 runs issue 9's scale (12 min 51 s,
# passed; docs/testing-control-plane.md).
JOBS = int(os.environ.get("GRAFT_CHAOS_JOBS", "10"))
ENDPOINTS = {"alpha": 3, "beta": 3}  # endpoint -> jobs promoting into it
# At most WINDOW of the jobs are applied and unfinished at a time: twenty Ray job drivers starting at
# once overload a 2-core machine (load above 80), and the operator under test starves with them.
WINDOW = 4
# SIGKILLs at random moments (fixed seed), each 8 to 16 s after the restarted operator answered its
# liveness probe (a fresh operator needs seconds to list and reconcile anything; a kill before that
# shows nothing); then it runs on to the end.
KILLS = 5
KILL_AFTER = (8.0, 16.0)


@pytest.fixture
def operator(control_plane: ControlPlane, tenant: str, ray_head: RayHead, tmp_path: Path) -> Iterator[ChartOperator]:
    op = on_shared_head(control_plane, [tenant], tmp_path, ray_head)
    yield op.start()
    op.stop()


def _jobs(model: Path, data: Path, storage: Path, head: RayHead) -> list[dict[str, Any]]:
    promoting = [ep for ep, n in ENDPOINTS.items() for _ in range(n)]
    docs = []
    for i in range(JOBS):
        doc = tiny_job(model, data, name=f"job-{i:02d}", training={"maxStepsPerEpoch": 1},
                       checkpoints={"storage": str(storage)}, runtime={"cluster": {"address": head.dashboard_url}})
        doc["spec"]["training"].pop("deepspeed")  # plain DDP: the fewest seconds per job
        doc["spec"]["serving"] = ({"endpoint": promoting[i], "promotion": "always", "resources": {"cpus": 0.25}}
                                  if i < len(promoting) else {"enabled": False})
        docs.append(doc)
    return docs


def _statuses(cp: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    """name -> status of every FineTuneJob in `namespace` (one list call)."""
    items = cp.kubectl_json("get", "finetunejobs", "-n", namespace).get("items") or []
    return {i["metadata"]["name"]: dict(i.get("status") or {}) for i in items}


def _settled(st: dict[str, Any], promotes: bool) -> bool:
    return st.get("phase") in ("Failed", "Rejected") or (st.get("phase") == "Succeeded" and (bool(st.get("promotion")) or not promotes))


def test_operator_killed_repeatedly_while_jobs_run_loses_nothing_and_duplicates_nothing(
    control_plane: ControlPlane, operator: ChartOperator, ray_head: RayHead, tenant: str, tmp_path: Path, minilm_path: Path,
) -> None:
    cp = control_plane
    data = write_sentiment_jsonl(tmp_path / "data.jsonl", rows_per_label=16)
    (tmp_path / "storage").mkdir()
    docs = _jobs(minilm_path, data, tmp_path / "storage", ray_head)
    promotes = {d["metadata"]["name"]: d["spec"]["serving"].get("enabled", True) for d in docs}
    applied: list[str] = []

    def pending() -> list[str]:
        statuses = _statuses(cp, tenant)
        return [n for n in applied if not _settled(statuses.get(n, {}), promotes[n])]

    def top_up() -> None:
        running = len(pending())
        for doc in docs[len(applied):len(applied) + max(0, WINDOW - running)]:
            cp.kubectl("apply", "-n", tenant, "-f", "-", input=json.dumps(doc))
            applied.append(doc["metadata"]["name"])

    rng, kills = random.Random(9), 0
    next_kill, deadline = time.monotonic() + rng.uniform(*KILL_AFTER), time.monotonic() + 1500
    while len(applied) < JOBS or pending():
        assert time.monotonic() < deadline, f"{JOBS - len(applied)} jobs not applied, {pending()} unfinished"
        top_up()
        if kills < KILLS and time.monotonic() >= next_kill:
            operator.kill()
            kills += 1
            operator.start()
            next_kill = time.monotonic() + rng.uniform(*KILL_AFTER)
        time.sleep(2)
    assert kills == KILLS, f"the jobs finished after {kills} kills: too few to show anything"

    finals = _statuses(cp, tenant)
    failed = {n: st.get("message") for n, st in finals.items() if st.get("phase") != "Succeeded"}
    assert not failed, failed
    assert all(st.get("result", {}).get("modelUri") for st in finals.values())

    ray_jobs = httpx.get(f"{ray_head.dashboard_url}/api/jobs/", timeout=30).json()
    per_job = Counter(j["submission_id"].split(".")[2] for j in ray_jobs
                      if (j.get("submission_id") or "").startswith(f"graft.{tenant}."))
    assert per_job == Counter(dict.fromkeys(promotes, 1)), per_job  # one submission each, never resubmitted

    for ep, n in ENDPOINTS.items():
        endpoint = get(cp, "modelendpoints", ep, tenant)
        assert endpoint is not None, f"ModelEndpoint {ep} was never created"
        ledger = [e["job"] for e in promotions(endpoint)]
        assert endpoint["spec"]["model"]["version"] == n, (ep, ledger)
        assert sorted(ledger) == sorted(j for j, st in finals.items() if (st.get("promotion") or {}).get("endpoint") == ep)
        assert all(st["promotion"]["decision"] == "promoted" for st in finals.values() if st.get("promotion"))
    cp.kubectl("delete", "finetunejobs,modelendpoints", "--all", "-n", tenant, "--wait=true", "--timeout=180s")
    wait_for(lambda: not [j for j in httpx.get(f"{ray_head.dashboard_url}/api/jobs/", timeout=30).json()
                          if (j.get("submission_id") or "").startswith(f"graft.{tenant}.")],
             timeout=180, what="the Ray job records of the deleted jobs to be gone")
