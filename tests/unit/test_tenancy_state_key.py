"""Hostile tenant: the per-job state key (graft.api.statekey) that vouches for restored files is one
the tenant can neither read nor choose. The operator creates it in a Secret with `generateName`
(so no Secret the tenant planted under a guessable name is ever used), owned by the FineTuneJob,
and hands it to every Ray container as a secretKeyRef: no value in the RayJob."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graft.api.errors import SpecError
from graft.api.statekey import STATE_KEY_ENV, STATE_KEY_SECRET_KEY
from graft.operator import kube as k
from graft.operator.admission import admit_job
from graft.operator.backends.rayjob import RayJobBackend
from graft.operator.cache import Store
from graft.operator.settings import OperatorSettings
from tests.unit.fake_kube import FakeKube
from tests.unit.test_operator_builders import job
from tests.unit.test_tenancy_admission import ctx, refused
from tests.unit.test_tenancy_admission import job as admission_job

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


@pytest.fixture
def settings(tmp_path: Path) -> OperatorSettings:
    key = tmp_path / "ray-auth-key"
    key.write_bytes(b"k" * 32)
    return OperatorSettings(ray_image="example.org/graft-ray:test", ray_auth_key_file=str(key))


def _containers(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _created(settings: OperatorSettings) -> tuple[FakeKube, dict[str, Any], str]:
    kube = FakeKube()
    RayJobBackend(kube, Store(), settings).act(job(), None, None)  # type: ignore[arg-type]  # obs is unused on create
    rayjob = kube.find(k.RAYJOBS, "team-a", "demo")
    assert rayjob is not None
    [(ns, name)] = [key for key, s in kube.secrets.items() if STATE_KEY_SECRET_KEY in s.get("stringData", {})]
    return kube, rayjob, name


def test_the_key_secret_is_created_with_a_generated_name_owned_by_the_job(settings: OperatorSettings) -> None:
    kube, _, name = _created(settings)
    secret = kube.secrets[("team-a", name)]
    assert secret["metadata"]["generateName"] == "graft-state-demo-" and name.startswith("graft-state-demo-")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "0123456789abcdef"
    assert len(secret["stringData"][STATE_KEY_SECRET_KEY]) == 64


def test_every_ray_container_gets_the_key_by_reference_only(settings: OperatorSettings) -> None:
    kube, rayjob, name = _created(settings)
    ref = {"name": STATE_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": STATE_KEY_SECRET_KEY}}}
    assert all(ref in c["env"] for c in _containers(rayjob))
    assert kube.secrets[("team-a", name)]["stringData"][STATE_KEY_SECRET_KEY] not in json.dumps(rayjob)


def test_a_secret_planted_under_the_prefix_is_never_the_one_used(settings: OperatorSettings) -> None:
    kube = FakeKube()
    kube.secrets[("team-a", "graft-state-demo-")] = {"stringData": {STATE_KEY_SECRET_KEY: "planted"}}
    RayJobBackend(kube, Store(), settings).act(job(), None, None)  # type: ignore[arg-type]
    rayjob = kube.find(k.RAYJOBS, "team-a", "demo")
    assert rayjob is not None
    used = {e["valueFrom"]["secretKeyRef"]["name"] for c in _containers(rayjob) for e in c["env"] if e["name"] == STATE_KEY_ENV}
    assert used and "graft-state-demo-" not in used


def test_a_tenant_cannot_set_the_key_in_its_runtime_env() -> None:
    """The runtime env would override the container's env in the driver: admission refuses the name."""
    refused(admit_job(admission_job(runtime={"env": {STATE_KEY_ENV: "chosen"}}), ctx()), f"spec.runtime.env: {STATE_KEY_ENV}")


def test_a_tenant_cannot_set_the_key_from_a_secret_of_its_own() -> None:
    with pytest.raises(SpecError, match=f"{STATE_KEY_ENV} is reserved"):
        job(runtime={"secretEnv": [{"name": STATE_KEY_ENV, "secretKeyRef": {"name": "own", "key": "k"}}]})
