"""Keyed digests (HMAC-SHA256) of what Graft writes and later restores from tenant-writable storage.

A job's storage can be written by its tenant, and two things read back from it unpickle: Ray Tune's
experiment state (`Tuner.restore` reads `tuner.pkl`, `experiment_state-*.json` with cloudpickled
parts, searcher and callback state) and DeepSpeed's checkpoint shards. So nothing is restored unless a
manifest keyed with the job's state key (graft.api.statekey: a key the tenant can neither read nor
write) vouches for every such file:

- the Tune experiment: `StateSigner` (a Tune callback) signs the state files from the driver's own
  staging directory after every step that changed them (never from storage, which the tenant could
  have changed meanwhile), `tuner.pkl` from the bytes Tune pickled, and writes the manifest
  `graft_state.json` to the experiment directory; `verify_experiment` checks it before a restore;
- trial checkpoints: graft.jobs.checkpoint signs each rank's manifest and verifies it before a
  worker loads the checkpoint.

A file the manifest lists may have several accepted digests (the last few versions Graft wrote):
Ray uploads the state asynchronously, so storage can hold the previous version when a driver stops.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.api.statekey import STATE_DIR_ENV, STATE_KEY_ENV

MANIFEST_FILE = "graft_state.json"
KEY_FILE = "state-key"
HISTORY = 4  # accepted versions per file
RESTORED_SUFFIXES = (".pkl", ".json")  # what Tune reads back from an experiment directory's top level


class Unverified(Exception):
    """Storage holds something the manifest does not vouch for (or no valid manifest)."""


def state_key() -> bytes:
    """The job's key: `GRAFT_STATE_KEY` (set from the operator's Secret on Kubernetes), else the
    key file in Graft's state directory on this machine (created 0600 on first use)."""
    value = os.environ.get(STATE_KEY_ENV, "")
    if value:
        return value.encode("utf-8")
    folder = Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".local" / "state" / "graft")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def digest(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_doc(key: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a `mac` over its canonical JSON."""
    return {**doc, "mac": digest(key, _canonical(doc))}


def verify_doc(key: bytes, signed: Any) -> dict[str, Any]:
    """The document without its `mac`; Unverified when the mac is absent or wrong."""
    if not isinstance(signed, dict) or not isinstance(signed.get("mac"), str):
        raise Unverified("the manifest carries no signature")
    doc = {k: v for k, v in signed.items() if k != "mac"}
    if not hmac.compare_digest(signed["mac"], digest(key, _canonical(doc))):
        raise Unverified("the manifest's signature does not match this job's key")
    return doc


@dataclass
class Manifest:
    """Accepted digests per file name (oldest first, at most HISTORY)."""

    files: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> bool:
        """Accept `value` for `name`; False when it already was."""
        known = self.files.setdefault(name, [])
        if value in known:
            return False
        known.append(value)
        del known[:-HISTORY]
        return True

    def dumps(self, key: bytes) -> str:
        return json.dumps(sign_doc(key, {"version": 1, "files": self.files}), sort_keys=True)

    @classmethod
    def loads(cls, key: bytes, text: str) -> Manifest:
        try:
            doc = verify_doc(key, json.loads(text))
        except json.JSONDecodeError as exc:
            raise Unverified(f"the manifest is not JSON: {exc}") from exc
        files = doc.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, list) for v in files.values()):
            raise Unverified("the manifest lists no files")
        return cls({str(k): [str(d) for d in v] for k, v in files.items()})


def restored_files(fs: Any, path: str, ignore: set[str]) -> list[str]:
    """Names of the files at the top of the experiment directory that Tune reads back on restore."""
    if not fs.exists(path):
        return []
    names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    return sorted(n for n in names if n.endswith(RESTORED_SUFFIXES) and n not in ignore and n != MANIFEST_FILE
                  and fs.isfile(f"{path}/{n}"))


def verify_experiment(fs: Any, path: str, key: bytes, ignore: set[str]) -> Manifest:
    """The experiment directory's manifest, once every file Tune would read back matches one of the
    digests it accepts; Unverified naming the first problem otherwise (no manifest, a bad signature,
    a file it does not list, a file it lists with other contents, no tuner.pkl). A listed file that
    storage lacks is no risk (nothing runs from it) and is allowed: Ray may not have uploaded it yet."""
    manifest_path = f"{path}/{MANIFEST_FILE}"
    if not fs.exists(manifest_path):
        raise Unverified(f"{MANIFEST_FILE} is missing")
    manifest = Manifest.loads(key, fs.cat_file(manifest_path).decode("utf-8"))
    present = restored_files(fs, path, ignore)
    if "tuner.pkl" not in present:
        raise Unverified("tuner.pkl is missing")
    for name in present:
        accepted = manifest.files.get(name)
        if accepted is None:
            raise Unverified(f"{name} was not written by this job")
        if digest(key, fs.cat_file(f"{path}/{name}")) not in accepted:
            raise Unverified(f"{name} was changed after this job wrote it")
    return manifest


def discard_unverified(fs: Any, path: str, ignore: set[str]) -> list[str]:
    """Remove the files a restore would read (and the manifest), so a fresh run in the same directory
    starts clean; returns their names."""
    names = restored_files(fs, path, ignore)
    for name in [*names, MANIFEST_FILE]:
        if fs.exists(f"{path}/{name}"):
            fs.rm(f"{path}/{name}")
    return names
