"""Hostile tenant: shell metacharacters in spec text never appear raw on a command line.

The RayJob entrypoint and the shared cluster's job submission carry the tenant's text (label names,
column names, a storage URI) base64-encoded (graft.api.argcodec); graft.jobs decodes it back
byte-for-byte. The real shells of both KubeRay submission modes: tests/kuberay/test_tenancy_shell_kuberay.py."""

from __future__ import annotations

import json
import shlex

import pytest

from graft.api.argcodec import decode_arg, encode_arg
from graft.api.load import parse_as
from graft.api.spec import FineTuneJob
from graft.jobs.__main__ import parse_job_json
from graft.operator.builders import build_rayjob
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import build_submission

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test")
LABELS = ["$(touch /tmp/pwned)`id`", "'; rm -rf / #\"\n&& echo \\x"]
TEXT_FIELD = "te$(xt)`;`'\""
STORAGE = "s3://bucket/$(id)`x`;'\"/runs"


def hostile_job() -> FineTuneJob:
    return parse_as(FineTuneJob, {
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "0123456789abcdef"},
        "spec": {"model": {"source": "/models/m"},
                 "dataset": {"source": "d.csv", "labelNames": LABELS, "textField": TEXT_FIELD},
                 "checkpoints": {"storage": STORAGE}},
    })


def _tenant_bytes_in(line: str) -> list[str]:
    return [s for s in ["$(", "`", ";", "\n", "\"", "touch", "id)"] if s in line]


def test_the_rayjob_entrypoint_holds_no_tenant_byte_raw() -> None:
    line = build_rayjob(hostile_job(), SETTINGS)["spec"]["entrypoint"]
    assert _tenant_bytes_in(line) == []
    assert shlex.split(line) == line.split(" ")  # nothing for a shell to unquote


def test_graft_jobs_receives_the_rayjob_spec_byte_for_byte() -> None:
    argv = shlex.split(build_rayjob(hostile_job(), SETTINGS)["spec"]["entrypoint"])
    job = parse_job_json(decode_arg(argv[argv.index("--spec-b64") + 1]))
    assert job.spec.dataset.label_names == LABELS and job.spec.dataset.text_field == TEXT_FIELD
    assert decode_arg(argv[argv.index("--result-b64") + 1]).startswith("s3://bucket/$(id)`x`;'\"/runs/team-a/")


def test_the_shared_cluster_submission_holds_no_tenant_byte_raw() -> None:
    submission = build_submission(hostile_job(), SETTINGS, "graft.team-a.demo.01234567")
    assert _tenant_bytes_in(submission.entrypoint) == []


def test_an_argument_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="not base64"):
        decode_arg("$(touch /tmp/x)")


def test_encoding_round_trips_any_text() -> None:
    text = json.dumps({"k": LABELS}) + "\u00e9\u4e2d\x00"
    assert decode_arg(encode_arg(text)) == text
