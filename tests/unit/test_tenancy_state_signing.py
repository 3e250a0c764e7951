"""Hostile tenant: files planted or changed in a job's storage are never restored (graft.jobs.signing).

The Tune experiment and the trial checkpoints carry a manifest keyed with the job's state key; a
restore goes ahead only when the manifest vouches for every file it would read. Pickled payloads
here write a marker file when unpickled; nothing in these checks unpickles, and every test that
plants one asserts the marker is absent."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import fsspec
import pytest
import torch

from graft.jobs.checkpoint import manifest_file, verify_checkpoint, write_manifest
from graft.jobs.signing import MANIFEST_FILE, Manifest, Unverified, digest, state_key, verify_experiment
from graft.jobs.state_signer import TUNER_FILE, StateSigner, restorable

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

KEY = b"k" * 32
IGNORE = {"graft_progress.json"}
FS = fsspec.filesystem("file")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def _experiment(tmp_path: Path) -> tuple[Path, StateSigner]:
    """An experiment directory as Tune leaves it, signed by a StateSigner from its staging copy."""
    exp, staging = tmp_path / "exp", tmp_path / "staging"
    exp.mkdir()
    staging.mkdir()
    tuner = pickle.dumps({"tuner": "state"})
    (exp / TUNER_FILE).write_bytes(tuner)
    for name, text in {"experiment_state-s1.json": '{"trial_data": []}', "basic-variant-state-s1.json": "{}"}.items():
        (staging / name).write_text(text)
        (exp / name).write_text(text)
    (exp / "graft_progress.json").write_text("{}")  # Graft's own, read as data: not signed
    signer = StateSigner(FS, str(exp), KEY, IGNORE)
    signer.sign_tuner(tuner)
    signer.staging = staging
    signer.sign_staging()
    return exp, signer


def test_an_experiment_this_job_wrote_is_restorable(tmp_path: Path) -> None:
    exp, _ = _experiment(tmp_path)
    manifest, why = restorable(FS, str(exp), KEY, IGNORE)
    assert why is None and manifest is not None and TUNER_FILE in manifest.files


def test_a_planted_tuner_pkl_is_refused_removed_and_never_runs(tmp_path: Path) -> None:
    exp, _ = _experiment(tmp_path)
    marker = tmp_path / "pwned"
    (exp / TUNER_FILE).write_bytes(pickle.dumps(Payload(marker)))
    manifest, why = restorable(FS, str(exp), KEY, IGNORE)
    assert manifest is None and why == f"{TUNER_FILE} was changed after this job wrote it"
    assert not (exp / TUNER_FILE).exists()  # the fresh attempt cannot trip over it either
    assert not marker.exists()


def test_an_extra_state_file_is_refused(tmp_path: Path) -> None:
    exp, _ = _experiment(tmp_path)
    (exp / "searcher-state-evil.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    with pytest.raises(Unverified, match="searcher-state-evil.pkl was not written by this job"):
        verify_experiment(FS, str(exp), KEY, IGNORE)


def test_a_manifest_forged_without_the_key_is_refused(tmp_path: Path) -> None:
    exp, _ = _experiment(tmp_path)
    forged = Manifest({name: [digest(b"guessed", (exp / name).read_bytes())] for name in (TUNER_FILE,)})
    (exp / MANIFEST_FILE).write_text(forged.dumps(b"guessed"))
    with pytest.raises(Unverified, match="signature does not match"):
        verify_experiment(FS, str(exp), KEY, IGNORE)


def test_an_experiment_without_a_manifest_is_refused(tmp_path: Path) -> None:
    exp, _ = _experiment(tmp_path)
    (exp / MANIFEST_FILE).unlink()
    assert restorable(FS, str(exp), KEY, IGNORE) == (None, f"{MANIFEST_FILE} is missing")


def test_an_earlier_version_of_a_state_file_stays_accepted(tmp_path: Path) -> None:
    """Ray uploads the state asynchronously: storage may still hold the version before the last."""
    exp, signer = _experiment(tmp_path)
    assert signer.staging is not None
    (signer.staging / "experiment_state-s1.json").write_text('{"trial_data": [1]}')
    os.utime(signer.staging / "experiment_state-s1.json", ns=(1, 1))
    signer.sign_staging()
    verify_experiment(FS, str(exp), KEY, IGNORE)  # storage still has the first version


def test_the_pickled_signer_carries_no_key(tmp_path: Path) -> None:
    """Tune pickles its callbacks into tuner.pkl, on the tenant's storage."""
    _, signer = _experiment(tmp_path)
    assert KEY not in pickle.dumps(signer)


def _checkpoint(tmp_path: Path) -> Path:
    ckpt = tmp_path / "ckpt"
    (ckpt / "deepspeed" / "state").mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt")
    (ckpt / "graft_checkpoint.json").write_text("{}")
    write_manifest(ckpt, rank=0, world=1, key=KEY)
    return ckpt


def test_a_checkpoint_this_job_wrote_verifies(tmp_path: Path) -> None:
    verify_checkpoint(_checkpoint(tmp_path), KEY)


def test_a_planted_deepspeed_shard_is_refused_before_anything_loads_it(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"w": Payload(marker)}, ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt")
    with pytest.raises(Unverified, match="was changed after this job wrote it"):
        verify_checkpoint(ckpt, KEY)
    assert not marker.exists()


def test_a_file_added_to_a_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    (ckpt / "deepspeed" / "state" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"x")
    with pytest.raises(Unverified, match="was not written by this job"):
        verify_checkpoint(ckpt, KEY)


def test_a_checkpoint_manifest_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    (ckpt / manifest_file(0)).unlink()
    write_manifest(ckpt, rank=0, world=1, key=b"the tenant's own key")
    with pytest.raises(Unverified, match="signature does not match"):
        verify_checkpoint(ckpt, KEY)


def test_without_the_env_the_key_is_a_private_file_that_stays_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFT_STATE_KEY", raising=False)
    monkeypatch.setenv("GRAFT_STATE_DIR", str(tmp_path / "state"))
    first = state_key()
    assert state_key() == first and len(first) == 64
    assert stat.S_IMODE((tmp_path / "state" / "state-key").stat().st_mode) == 0o600


def test_the_env_key_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFT_STATE_KEY", "from-the-secret")
    assert state_key() == b"from-the-secret"


def test_a_state_file_swapped_after_the_check_is_refused_when_ray_reads_it(tmp_path: Path) -> None:
    """The restored experiment reads through graft.jobs.verified_fs: each read is checked, not only the directory beforehand."""
    import pyarrow.fs as pafs

    from graft.jobs.verified_fs import verified_filesystem

    exp, signer = _experiment(tmp_path)
    manifest = verify_experiment(FS, str(exp), KEY, IGNORE)
    fs = verified_filesystem(None, str(exp), manifest, KEY, IGNORE)
    with fs.open_input_stream(f"{exp}/{TUNER_FILE}") as f:
        assert pickle.loads(f.readall()) == {"tuner": "state"}
    marker = tmp_path / "pwned"
    (exp / TUNER_FILE).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(OSError, match="this job did not write it"):
        fs.open_input_file(f"{exp}/{TUNER_FILE}")
    assert not marker.exists()
    assert isinstance(pickle.loads(pickle.dumps(fs)), pafs.FileSystem) and KEY not in pickle.dumps(fs)
