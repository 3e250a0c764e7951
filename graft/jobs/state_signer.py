"""The Tune callback that signs a running experiment's state (graft.jobs.signing), and the check
that decides whether a later attempt may restore it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ray.cloudpickle as ray_pickle
from ray import tune

from graft.jobs.signing import (
    MANIFEST_FILE,
    RESTORED_SUFFIXES,
    Manifest,
    Unverified,
    digest,
    discard_unverified,
    verify_experiment,
)

TUNER_FILE = "tuner.pkl"


class StateSigner(tune.Callback):
    """Keeps `<experiment>/graft_state.json` current: after every Tune step that changed the state
    files in the driver's staging directory (the bytes Ray uploads), and at the experiment's end.

    Tune pickles its callbacks into `tuner.pkl`: a pickled StateSigner carries neither the key nor
    the filesystem, and one unpickled from there does nothing (each attempt installs its own)."""

    def __init__(self, fs: Any, path: str, key: bytes, ignore: set[str], manifest: Manifest | None = None) -> None:
        self.fs, self.path, self.key, self.ignore = fs, path, key, set(ignore)
        self.manifest = manifest or Manifest()
        self.seen: dict[str, tuple[int, int]] = {}
        self.staging: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fs, self.path, self.key, self.ignore = None, "", b"", set()
        self.manifest, self.seen, self.staging = Manifest(), {}, None

    def sign_tuner(self, pickled: bytes) -> None:
        """Accept `pickled` as tuner.pkl (the bytes Tune wrote when the Tuner was created)."""
        if self.manifest.add(TUNER_FILE, digest(self.key, pickled)):
            self.write()

    def sign_new_tuner(self, tuner: Any) -> None:
        """Sign the tuner.pkl a new `tune.Tuner` wrote, with the bytes this process pickles (never
        as read back from storage): Tune pickles the same state the same way."""
        local = tuner._local_tuner
        assert local is not None  # a local (not Ray Client) Tuner
        pickled = ray_pickle.dumps(local.__getstate__())
        if self.fs.cat_file(f"{self.path}/{TUNER_FILE}") != pickled:
            print("[graft] tuner.pkl on storage is not what this job pickled: a later attempt will not restore this experiment",
                  file=sys.stderr, flush=True)
            return
        self.sign_tuner(pickled)

    def sign_staging(self) -> None:
        if self.staging is None or self.fs is None or not self.staging.is_dir():
            return
        changed = False
        for p in sorted(self.staging.iterdir()):
            if not p.is_file() or not p.name.endswith(RESTORED_SUFFIXES) or p.name in self.ignore or p.name == MANIFEST_FILE:
                continue
            st = p.stat()
            if self.seen.get(p.name) == (st.st_mtime_ns, st.st_size):
                continue
            self.seen[p.name] = (st.st_mtime_ns, st.st_size)
            changed |= self.manifest.add(p.name, digest(self.key, p.read_bytes()))
        if changed:
            self.write()

    def write(self) -> None:
        with self.fs.open(f"{self.path}/{MANIFEST_FILE}", "wb") as f:
            f.write(self.manifest.dumps(self.key).encode("utf-8"))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if trials and self.fs is not None:
            self.staging = Path(trials[0].storage.experiment_driver_staging_path)
            self.sign_staging()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # Tune would unpickle the trial's error.pkl from storage for the result grid; its text
        # (error.txt, read as text) is all Graft uses.
        trial.run_metadata.pickled_error_filename = None

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.sign_staging()


def restorable(fs: Any, path: str, key: bytes, ignore: set[str]) -> tuple[Manifest | None, str | None]:
    """(the verified manifest, None) when the experiment at `path` may be restored; (None, why not)
    otherwise, after removing the files a restore would have read (the attempt starts fresh)."""
    if not fs.exists(f"{path}/{TUNER_FILE}") and not fs.exists(f"{path}/{MANIFEST_FILE}"):
        return None, None  # nothing there: a first attempt
    try:
        return verify_experiment(fs, path, key, ignore), None
    except Unverified as exc:
        removed = discard_unverified(fs, path, ignore)
        print(f"[graft] not restoring the experiment in {path}: {exc}; removed {', '.join(removed) or 'nothing'}; "
              "trials start over", file=sys.stderr, flush=True)
        return None, str(exc)
