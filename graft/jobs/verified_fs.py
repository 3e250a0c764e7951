"""The storage filesystem a restored Tune experiment runs on: every read of a state file Tune would
unpickle (the experiment directory's top-level `*.pkl`/`*.json`) is checked against the verified
manifest (graft.jobs.signing) at the moment it is read, and served from the bytes that were checked.

Verifying the directory once before `Tuner.restore` would leave a window: the tenant could swap a
file between the check and Ray's read. Through this filesystem there is no such window. Everything
else (writes, listings, trial and Train files) passes through unchanged.

Tune pickles its storage context (this filesystem included) into trial actors and experiment state:
a pickled handler carries neither the key nor the manifest, and refuses every state-file read.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from graft.jobs.signing import MANIFEST_FILE, RESTORED_SUFFIXES, Manifest, digest


class VerifiedReads(pafs.FileSystemHandler):
    def __init__(self, base: pafs.FileSystem, root: str, manifest: Manifest | None, key: bytes | None, ignore: set[str]) -> None:
        self.base, self.root, self.manifest, self.key, self.ignore = base, root.rstrip("/"), manifest, key, set(ignore)

    def __getstate__(self) -> dict[str, Any]:
        return {"base": self.base, "root": self.root, "ignore": sorted(self.ignore)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["base"], state["root"], None, None, set(state["ignore"]))  # type: ignore[misc]

    def _state_file(self, path: str) -> str | None:
        name = posixpath.basename(path.rstrip("/"))
        if posixpath.dirname(path.rstrip("/")) != self.root or not name.endswith(RESTORED_SUFFIXES):
            return None
        return None if name in self.ignore or name == MANIFEST_FILE else name

    def _verified(self, path: str) -> pa.BufferReader | None:
        name = self._state_file(path)
        if name is None:
            return None
        with self.base.open_input_stream(path) as f:
            data = f.readall()
        if self.key is None or self.manifest is None or digest(self.key, data) not in self.manifest.files.get(name, []):
            raise OSError(f"refusing to read {path}: this job did not write it (graft.jobs.signing)")
        return pa.BufferReader(data)

    def open_input_stream(self, path: str) -> Any:
        return self._verified(path) or self.base.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self._verified(path) or self.base.open_input_file(path)

    # -- everything else: the base filesystem's --------------------------------------------------
    def get_type_name(self) -> str:
        return f"graft-verified+{self.base.type_name}"

    def normalize_path(self, path: str) -> str:
        return str(self.base.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self.base.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self.base.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.base.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.base.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.base.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.base.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.base.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.base.copy_file(src, dest)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return self.base.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.base.open_append_stream(path, metadata=metadata)


def verified_filesystem(base: pafs.FileSystem | None, root: str, manifest: Manifest, key: bytes, ignore: set[str]) -> pafs.FileSystem:
    """`base` (local when None) with state-file reads under `root` checked against `manifest`."""
    return pafs.PyFileSystem(VerifiedReads(base or pafs.LocalFileSystem(), root, manifest, key, ignore))
