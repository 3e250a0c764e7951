"""graft.storage without a server: the job directory layout and where S3 settings come from."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from graft import storage
from graft.storage import S3Config, StorageError, job_dir, join

pytestmark = pytest.mark.unit


def test_a_kubernetes_job_gets_namespace_and_uid_in_its_directory() -> None:
    assert job_dir("s3://bkt/root", "team-a", "sentiment", "0123456789abcdef") == "s3://bkt/root/team-a/sentiment-01234567"


def test_two_namespaces_with_the_same_job_name_never_share_a_directory() -> None:
    assert job_dir("s3://b", "a", "job", "1111111100") != job_dir("s3://b", "b", "job", "1111111100")


def test_a_graft_run_job_without_uid_lives_under_its_name(tmp_path: Path) -> None:
    assert job_dir(str(tmp_path), None, "local", None) == str(tmp_path.resolve() / "local")


def test_join_keeps_uris_and_resolves_paths(tmp_path: Path) -> None:
    assert join("s3://b/x/", "runs", "exp") == "s3://b/x/runs/exp"
    assert join(f"file://{tmp_path}", "a") == str(tmp_path.resolve() / "a")


def test_settings_come_from_the_standard_aws_variables() -> None:
    cfg = S3Config.load({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_REGION": "eu-west-1"})
    assert (cfg.endpoint, cfg.region, cfg.access_key, cfg.secret_key) == ("http://127.0.0.1:9", "eu-west-1", "AK", "SK")


def test_the_s3_specific_endpoint_wins_over_the_generic_one() -> None:
    cfg = S3Config.load({"AWS_ENDPOINT_URL": "http://generic", "AWS_ENDPOINT_URL_S3": "http://s3-only"})
    assert cfg.endpoint == "http://s3-only"


def test_credentials_can_come_from_a_mounted_secret_directory(tmp_path: Path) -> None:
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("from-file\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("secret-from-file\n")
    cfg = S3Config.load({"GRAFT_S3_CREDENTIALS_DIR": str(tmp_path)})
    assert (cfg.access_key, cfg.secret_key) == ("from-file", "secret-from-file")


def test_credentials_are_never_in_the_repr() -> None:
    cfg = S3Config.load({"AWS_ACCESS_KEY_ID": "AKIDSECRETLOOKING", "AWS_SECRET_ACCESS_KEY": "very-secret"})
    text = repr(cfg) + str(cfg)
    assert "very-secret" not in text and "AKIDSECRETLOOKING" not in text
    assert "credentials=set" in text


def test_half_a_key_pair_is_an_error_naming_the_missing_variable() -> None:
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY is not set"):
        S3Config.load({"AWS_ACCESS_KEY_ID": "AK"})


def test_a_missing_credentials_directory_says_what_to_mount(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="mount the credentials Secret"):
        S3Config.load({"GRAFT_S3_CREDENTIALS_DIR": str(tmp_path / "absent")})


def _job(name: str, uid: str, storage_root: str):  # type: ignore[no-untyped-def]
    from graft.api import FineTuneJob

    return FineTuneJob.model_validate({
        "metadata": {"name": name, "namespace": "team-a", "uid": uid},
        "spec": {"model": {"source": "/m"}, "dataset": {"source": "/d.jsonl"}, "checkpoints": {"storage": storage_root}},
    })


def test_the_ttl_removes_this_jobs_experiment_and_nothing_else(tmp_path: Path) -> None:
    from graft.operator.settings import OperatorSettings
    from graft.operator.storage import job_dir, remove_experiment

    settings = OperatorSettings()
    mine, twin = _job("job", "aaaaaaaa-1", str(tmp_path)), _job("job", "bbbbbbbb-2", str(tmp_path))  # same name, re-created
    for j in (mine, twin):
        own = Path(job_dir(j, settings) or "")
        (own / "runs" / "exp").mkdir(parents=True)
        (own / "result.json").write_text("{}")
        (own / "model").mkdir()

    assert remove_experiment(mine, settings)

    own, other = Path(job_dir(mine, settings) or ""), Path(job_dir(twin, settings) or "")
    assert not (own / "runs").exists() and (own / "result.json").exists() and (own / "model").exists()
    assert (other / "runs" / "exp").exists()


def test_storage_the_operator_cannot_reach_is_logged_not_fatal(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from graft.operator.settings import OperatorSettings
    from graft.operator.storage import remove_experiment

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    job = _job("job", "cccccccc-3", "s3://bucket/root")
    assert remove_experiment(job, OperatorSettings()) is False
    assert "could not delete its experiment under s3://bucket/root/team-a/job-cccccccc" in caplog.text


def test_new_directories_on_shared_storage_are_group_writable_and_not_world_writable(tmp_path: Path) -> None:
    """The operator (uid 65532) and the Ray pods (uid 1000) share the storage group: whoever creates a
    tenant's directory first must not lock the other out (a job failing before its pods wrote
    anything had the operator create it 0755, and every later job of the tenant failed), and no other
    uid may write there (issue 21, finding 4)."""
    existing = tmp_path / "root"
    existing.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        storage.ensure_dir(existing / "team-a" / "job-0123abcd")
        storage.write_text(str(existing / "team-b" / "job-4567ef01" / "job.log"), "log")
    finally:
        os.umask(old)
    for new in ("team-a", "team-a/job-0123abcd", "team-b", "team-b/job-4567ef01"):
        assert stat.S_IMODE((existing / new).stat().st_mode) == 0o2770, new
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # what existed is left alone


def test_a_json_document_cut_by_a_concurrent_replace_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter(['{"trials": {"a": 1}, "resu', '{"trials": {"a": 1}, "resumes": []}'])
    monkeypatch.setattr(storage, "read_text", lambda uri: next(reads))

    assert storage.read_json("s3://bucket/p.json") == {"trials": {"a": 1}, "resumes": []}


def test_a_json_document_that_stays_unreadable_raises_its_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "read_text", lambda uri: "{not json")
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)

    with pytest.raises(json.JSONDecodeError):
        storage.read_json("s3://bucket/p.json")
