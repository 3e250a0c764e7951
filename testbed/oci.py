"""The one OCI image writer of the test bed: OCI image archives (an OCI image layout in a tar,
the format `ctr images import` reads), without a registry, a builder or a Docker daemon.

* scripts/images.sh (the Ray and operator images) runs it as a command, from layer directories;
  standard library only, so it runs with any Python 3.11:

      python3 -m testbed.oci digest DIR        # tar DIR as a layer; record and print "sha256:<hex> <size>"
      python3 -m testbed.oci write --ref REF --dockerfile FILE --layer DIR... [-o FILE|-] [--digest-only] [--present FILE]

* :func:`write_image` writes the node's own small images (testbed/kubenode.py: the sandbox
  ``pause`` image, CoreDNS, a busybox toolbox), each a few host files in one layer:

      write_image(Path("pause.tar"), "graft.local/pause:v1.36.3", {"/pause": bin_dir / "pause"}, entrypoint=["/pause"])

Both share the image documents (config, manifest, index) and the archive layout.

A layer of a directory is GNU tar of the directory (sorted, numeric owners, real modes and mtimes), uncompressed
(compressing several GB on 2 cores costs minutes and the archive never leaves the machine). The
tar of an unchanged directory is byte-identical, so its digest is computed once when the layer is
built (stored next to it as `DIR.digest`) and the archive streams the tar again, checking the
digest as it goes. The image config (Env, User, WorkingDir, Entrypoint, Cmd, ExposedPorts) comes
from the Dockerfile's ENV/USER/WORKDIR/ENTRYPOINT/CMD/EXPOSE lines, so an image built here runs
like one built from the same Dockerfile on the upstream bases. A layer of host files
(:func:`layer_tar`) is built in memory, reproducibly (fixed mtimes and owners), so the same inputs
give the same digests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHUNK = 1 << 20


class ArchiveError(RuntimeError):
    """The layer or Dockerfile cannot be turned into an image; the message says what to do."""


def _tar_command(directory: Path) -> list[str]:
    return ["tar", "--sort=name", "--format=gnu", "--numeric-owner", "-C", str(directory), "-cf", "-", "."]


def _tar_chunks(directory: Path) -> Iterator[bytes]:
    proc = subprocess.Popen(_tar_command(directory), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    while chunk := proc.stdout.read(CHUNK):
        yield chunk
    if proc.wait() != 0:
        raise ArchiveError(f"tar of {directory} failed with exit code {proc.returncode}")


def layer_digest(directory: Path) -> tuple[str, int]:
    """sha256 digest and size of the layer tar of `directory`."""
    h, size = hashlib.sha256(), 0
    for chunk in _tar_chunks(directory):
        h.update(chunk)
        size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def recorded_digest(directory: Path) -> tuple[str, int]:
    record = Path(f"{directory}.digest")
    if not record.is_file():
        raise ArchiveError(f"{record} is missing: run `python3 -m testbed.oci digest {directory}` after building the layer")
    digest, size = record.read_text().split()
    return digest, int(size)


@dataclass
class ImageConfig:
    env: dict[str, str] = field(default_factory=lambda: {"PATH": BASE_PATH})
    user: str = ""
    workdir: str = ""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    exposed: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> Iterator[str]:
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not line and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            line += stripped[:-1] + " "
            continue
        yield line + stripped
        line = ""
    if line:
        yield line


def _exec_form(value: str, instruction: str) -> list[str]:
    if value.startswith("["):
        parsed = json.loads(value)
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise ArchiveError(f"{instruction} {value}: expected a JSON list of strings")
        return parsed
    return ["/bin/sh", "-c", value]


def dockerfile_config(path: Path) -> ImageConfig:
    """The runtime config a Dockerfile's last stage sets (ARG substitution is not needed here)."""
    config = ImageConfig()
    for line in _logical_lines(path.read_text()):
        instruction, _, value = line.partition(" ")
        instruction, value = instruction.upper(), value.strip()
        if instruction == "FROM":
            config = ImageConfig()  # only the last stage counts
        elif instruction == "ENV":
            for item in shlex.split(value):
                key, sep, val = item.partition("=")
                if not sep:
                    raise ArchiveError(f"{path}: `ENV {value}`: use the KEY=VALUE form")
                config.env[key] = val
        elif instruction == "USER":
            config.user = value
        elif instruction == "WORKDIR":
            config.workdir = value
        elif instruction == "ENTRYPOINT":
            config.entrypoint = _exec_form(value, instruction)
            config.cmd = None  # as in Docker: a new ENTRYPOINT resets CMD
        elif instruction == "CMD":
            config.cmd = _exec_form(value, instruction)
        elif instruction == "EXPOSE":
            config.exposed += [p if "/" in p else f"{p}/tcp" for p in value.split()]
    return config


def _json_blob(obj: object) -> tuple[bytes, str]:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return data, f"sha256:{hashlib.sha256(data).hexdigest()}"


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))


class _LayerStream(io.RawIOBase):
    """The layer tar of a directory as a file object, checked against its recorded digest at EOF."""

    def __init__(self, directory: Path, digest: str, size: int) -> None:
        self._chunks = _tar_chunks(directory)
        self._buffer = b""
        self._hash = hashlib.sha256()
        self._seen = 0
        self._directory, self._digest, self._size = directory, digest, size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._check()
                return 0
            self._hash.update(chunk)
            self._seen += len(chunk)
            self._buffer = chunk
        n = min(len(b), len(self._buffer))
        b[:n], self._buffer = self._buffer[:n], self._buffer[n:]
        return n

    def finish(self) -> None:
        """Read what the archive did not (a tar that grew) and check the whole tar against the record."""
        for chunk in self._chunks:
            self._hash.update(chunk)
            self._seen += len(chunk)
        self._check()

    def _check(self) -> None:
        got = f"sha256:{self._hash.hexdigest()}"
        if got != self._digest or self._seen != self._size:
            raise ArchiveError(
                f"layer {self._directory} changed since it was built ({got} {self._seen} bytes, recorded "
                f"{self._digest} {self._size}): delete it and run scripts/images.sh build again"
            )


@dataclass
class Documents:
    config: bytes
    config_digest: str
    manifest: bytes
    manifest_digest: str
    index: bytes


def _documents(ref: str, config: ImageConfig, layers: Sequence[tuple[str, int]], history: Sequence[str]) -> Documents:
    """Config, manifest and index of an image with ``layers`` ((digest, size), base first)."""
    container: dict[str, object] = {"Env": [f"{k}={v}" for k, v in config.env.items()]}
    if config.user:
        container["User"] = config.user
    if config.workdir:
        container["WorkingDir"] = config.workdir
    if config.entrypoint is not None:
        container["Entrypoint"] = config.entrypoint
    if config.cmd is not None:
        container["Cmd"] = config.cmd
    if config.exposed:
        container["ExposedPorts"] = {p: {} for p in config.exposed}
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]},
        "history": [{"created_by": h} for h in history],
    }
    config_bytes, config_digest = _json_blob(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": s} for d, s in layers],
    }
    manifest_bytes, manifest_digest = _json_blob(manifest)
    annotations = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "annotations": annotations,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }
    return Documents(config_bytes, config_digest, manifest_bytes, manifest_digest, json.dumps(index, sort_keys=True).encode())


def image_documents(*, ref: str, dockerfile: Path, layers: list[Path]) -> Documents:
    """Config, manifest and index of the image of layer directories (deterministic: same layers and
    Dockerfile, same digests)."""
    return _documents(ref, dockerfile_config(dockerfile), [recorded_digest(d) for d in layers],
                      [f"scripts/images.sh layer {d.parent.name}/{d.name}" for d in layers])


def _write_layout(out_file: IO[bytes], docs: Documents, blobs: Iterator[tuple[str, int, IO[bytes], Callable[[], None]]]) -> None:
    """The archive: oci-layout, the layer blobs ((digest, size, reader, called-after-reading)), config,
    manifest, index.json; streamed (``w|``), GNU tar."""
    with tarfile.open(fileobj=out_file, mode="w|", format=tarfile.GNU_FORMAT) as out:
        _add_bytes(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for digest, size, reader, done in blobs:
            info = tarfile.TarInfo(f"blobs/sha256/{digest.split(':', 1)[1]}")
            info.size, info.mode = size, 0o644
            out.addfile(info, reader)
            done()
        _add_bytes(out, f"blobs/sha256/{docs.config_digest.split(':', 1)[1]}", docs.config)
        _add_bytes(out, f"blobs/sha256/{docs.manifest_digest.split(':', 1)[1]}", docs.manifest)
        _add_bytes(out, "index.json", docs.index)


def write_archive(out_file: IO[bytes], *, ref: str, dockerfile: Path, layers: list[Path], present: frozenset[str] = frozenset()) -> str:
    """Stream the archive to `out_file`; return the manifest digest. Layer blobs whose digest is in
    `present` (the target content store has them) are left out: the index and manifest still name them."""
    docs = image_documents(ref=ref, dockerfile=dockerfile, layers=layers)
    recorded = [recorded_digest(d) for d in layers]

    def blobs() -> Iterator[tuple[str, int, IO[bytes], Callable[[], None]]]:
        for directory, (digest, size) in zip(layers, recorded):
            if digest in present:
                continue
            stream = _LayerStream(directory, digest, size)
            yield digest, size, io.BufferedReader(stream, CHUNK), stream.finish

    _write_layout(out_file, docs, blobs())
    return docs.manifest_digest


# ------------------------------------------------------------ images of a few host files
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
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_image(out: Path, ref: str, files: Mapping[str, Path], *, entrypoint: Sequence[str], cmd: Sequence[str] = (),
                env: Sequence[str] = ("PATH=/",), user: str = "") -> str:
    """Write an OCI archive of a one-layer image ``ref`` (e.g. ``graft.local/pause:v1``) holding
    ``files`` to ``out`` (atomically); return the manifest digest."""
    layer = layer_tar(files)
    digest = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    config = ImageConfig(env=dict(e.split("=", 1) for e in env), user=user, workdir="/",
                         entrypoint=list(entrypoint), cmd=list(cmd) or None)
    docs = _documents(ref, config, [(digest, len(layer))], [f"testbed/oci.py: {', '.join(sorted(files))}"])
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        _write_layout(f, docs, iter([(digest, len(layer), io.BytesIO(layer), lambda: None)]))
    tmp.replace(out)
    return docs.manifest_digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m testbed.oci", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dig = sub.add_parser("digest", help="tar a layer directory, record and print its digest and size")
    dig.add_argument("directory", type=Path)
    wr = sub.add_parser("write", help="write the OCI archive")
    wr.add_argument("--ref", required=True, help="image reference, e.g. ghcr.io/graft-dev/graft-operator:0.1.0")
    wr.add_argument("--dockerfile", required=True, type=Path)
    wr.add_argument("--layer", action="append", required=True, type=Path, help="layer directory, base first")
    wr.add_argument("-o", "--output", default="-", help="archive file, or - for stdout")
    wr.add_argument("--digest-only", action="store_true", help="print the manifest digest, write nothing")
    wr.add_argument("--present", type=Path, help="file of blob digests (sha256:...) the target already has: left out")
    args = parser.parse_args(argv)
    try:
        if args.command == "digest":
            digest, size = layer_digest(args.directory)
            Path(f"{args.directory}.digest").write_text(f"{digest} {size}\n")
            print(digest, size)
            return 0
        if args.digest_only:
            print(image_documents(ref=args.ref, dockerfile=args.dockerfile, layers=args.layer).manifest_digest)
            return 0
        present = frozenset(args.present.read_text().split()) if args.present else frozenset()
        if args.output == "-":
            digest = write_archive(sys.stdout.buffer, ref=args.ref, dockerfile=args.dockerfile, layers=args.layer, present=present)
        else:
            with open(args.output, "wb") as f:
                digest = write_archive(f, ref=args.ref, dockerfile=args.dockerfile, layers=args.layer, present=present)
        print(f"{args.ref} {digest}", file=sys.stderr)
        return 0
    except ArchiveError as exc:
        print(f"testbed.oci: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
