"""Spec immutability (design.md 1; issue 8 item 1) on the real API server: every spec field but
`suspend` is refused after creation by the CRD's CEL transition rules, with a message naming it."""

from __future__ import annotations

import pytest

from tests.controlplane import ControlPlane
from tests.integration.helpers import FTJ, apply, finetunejob, get, patch

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]


def edit(cp: ControlPlane, namespace: str, name: str, spec: dict) -> str:
    p = cp.kubectl("patch", FTJ, name, "-n", namespace, "--type=merge", "-p",
                   __import__("json").dumps({"spec": spec}), check=False)
    assert p.returncode != 0, f"the edit {spec} was accepted"
    return p.stderr


def test_editing_a_field_after_creation_is_refused_with_a_message_naming_it(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("frozen"), namespace)
    err = edit(graft_crds, namespace, "frozen", {"resources": {"workers": 8}})
    assert "spec.resources is immutable: delete the FineTuneJob and create it again" in err
    assert get(graft_crds, FTJ, "frozen", namespace)["spec"]["resources"]["workers"] == 2


def test_adding_a_field_the_job_was_created_without_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("bare"), namespace)
    err = edit(graft_crds, namespace, "bare", {"runtime": {"env": {"LD_PRELOAD": "/tmp/x.so"}}})
    assert "spec.runtime is immutable" in err


def test_suspend_can_still_change(graft_crds: ControlPlane, namespace: str) -> None:
    apply(graft_crds, finetunejob("pausable"), namespace)
    patch(graft_crds, FTJ, "pausable", namespace, {"spec": {"suspend": True}})
    assert get(graft_crds, FTJ, "pausable", namespace)["spec"]["suspend"] is True
