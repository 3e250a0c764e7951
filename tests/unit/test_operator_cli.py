"""`graft operator` flags map onto OperatorSettings and kopf's run options."""

from __future__ import annotations

import pytest

from graft.api.status import FineTuneJobStatus
from graft.cli.main import build_parser
from graft.operator.main import settings_from_args
from graft.operator.settings import DEFAULT_RAY_IMAGE
from graft.operator.status import needs_work

pytestmark = pytest.mark.unit


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["operator", *argv])


def test_flags_become_settings() -> None:
    args = parse("-n", "team-a", "-n", "team-b", "--ray-image", "r:1", "--result-storage", "s3://b/results",
                 "--storage-pvc", "shared", "--resync-seconds", "10")
    s = settings_from_args(args)
    assert args.namespace == ["team-a", "team-b"]
    assert (s.ray_image, s.result_storage, s.storage_pvc, s.resync_seconds) == ("r:1", "s3://b/results", "shared", 10)


def test_job_and_serve_env_flags_add_to_the_operators_environment() -> None:
    s = settings_from_args(parse("--job-env", "HF_HUB_OFFLINE=1", "--serve-env", "HF_HUB_OFFLINE=1"))
    assert s.job_env["HF_HUB_OFFLINE"] == "1" and s.job_env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert s.serve_env == {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def test_env_flags_need_key_equals_value() -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        settings_from_args(parse("--serve-env", "HF_HUB_OFFLINE"))


def test_defaults_are_cluster_wide_standalone_with_the_pinned_ray_image() -> None:
    args = parse()
    assert args.namespace == [] and args.peering is None and settings_from_args(args).ray_image == DEFAULT_RAY_IMAGE


def test_priority_accepts_random_or_an_integer() -> None:
    assert parse("--priority", "7").priority == 7
    assert parse("--priority", "random").priority >= 1
    with pytest.raises(SystemExit):
        parse("--priority", "high")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, True),
        ({"phase": "Running"}, True),
        ({"phase": "Failed", "conditions": [{"type": "Accepted", "status": "False"}]}, False),
        ({"phase": "Succeeded", "conditions": [{"type": "Accepted", "status": "True"}]}, True),
        ({"phase": "Succeeded", "conditions": [{"type": "Accepted", "status": "True"},
                                               {"type": "RayJobDeleted", "status": "True"}]}, False),
    ],
)
def test_the_resync_stops_once_a_job_is_fully_done(status: dict, expected: bool) -> None:
    assert needs_work(FineTuneJobStatus.model_validate(status) if status else None, ray_job_path=True) is expected
