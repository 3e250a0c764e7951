"""Write a one-layer OCI image archive from host files, without a registry or builder.

Used for the node's own small images (the sandbox ``pause`` image and CoreDNS): each is
a static binary in an otherwise empty (scratch) image. The archive is an OCI image
layout in a tar (``oci-layout``, ``index.json``, ``blobs/sha256/...``), which
``ctr images import`` reads; the layer is an uncompressed, reproducible tar (fixed
mtimes and owners), so the same inputs give the same digests.

    write_image(Path("pause.tar"), "graft.local/pause:v1.36.3",
                {"/pause": Path(".../bin/pause")}, entrypoint=["/pause"])
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Mapping, Sequence

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _tar_bytes(entries: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _entry(name: str, data: bytes | None, mode: int) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    return info, data


def layer_tar(files: Mapping[str, Path]) -> bytes:
    """A reproducible layer holding ``files`` (image path -> host file, mode kept), with
    their parent directories and an empty /tmp (mode 1777)."""
    dirs = {"tmp"}
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    entries = [_entry(d, None, 0o1777 if d == "tmp" else 0o755) for d in sorted(dirs)]
    for path, src in sorted(files.items()):
        entries.append(_entry(path.strip("/"), src.read_bytes(), src.stat().st_mode & 0o7777))
    return _tar_bytes(entries)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def write_image(
    out: Path,
    ref: str,
    files: Mapping[str, Path],
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    env: Sequence[str] = ("PATH=/",),
    user: str = "",
) -> str:
    """Write an OCI archive for image ``ref`` (e.g. ``graft.local/pause:v1``) to ``out``
    and return the manifest digest."""
    layer_digest, layer = _blob(layer_tar(files))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "Cmd": list(cmd), "Env": list(env),
                   "User": user, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": f"graft tests/ociimage.py: {', '.join(sorted(files))}"}],
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref},
        }],
    }
    entries = [
        _entry("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644),
        _entry("index.json", json.dumps(index, sort_keys=True).encode(), 0o644),
        _entry("blobs", None, 0o755),
        _entry("blobs/sha256", None, 0o755),
    ]
    for digest, data in ((layer_digest, layer), (config_digest, config_bytes),
                         (manifest_digest, manifest_bytes)):
        entries.append(_entry("blobs/sha256/" + digest.split(":", 1)[1], data, 0o644))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(_tar_bytes(entries))
    tmp.replace(out)
    return manifest_digest
