"""testbed/oci.py: the OCI archive scripts/images.sh imports into containerd, and the node's one-layer images."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from testbed import oci

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _layer(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    layer = tmp_path / name
    for rel, text in files.items():
        (layer / rel).parent.mkdir(parents=True, exist_ok=True)
        (layer / rel).write_text(text)
    assert oci.main(["digest", str(layer)]) == 0
    return layer


def _archive(tmp_path: Path, layers: list[Path], dockerfile: Path) -> dict[str, bytes]:
    out = io.BytesIO()
    oci.write_archive(out, ref="example.test/img:1", dockerfile=dockerfile, layers=layers)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_operator_dockerfile_config_is_the_image_config() -> None:
    config = oci.dockerfile_config(REPO / "docker" / "operator.Dockerfile")
    assert config.entrypoint == ["graft", "operator"]
    assert config.user == "10001:10001" and config.workdir == "/tmp"
    assert config.env["PYTHONUNBUFFERED"] == "1"
    assert "/usr/local/bin" in config.env["PATH"].split(":")


def test_ray_dockerfile_runs_as_ray_with_hub_access_on_and_usage_stats_off() -> None:
    config = oci.dockerfile_config(REPO / "docker" / "ray.Dockerfile")
    assert config.user == "ray"
    assert "HF_HUB_OFFLINE" not in config.env  # offline is the operator's --job-env/--serve-env choice
    assert config.env["RAY_USAGE_STATS_ENABLED"] == "0"


def test_archive_blobs_match_their_digests_and_the_index_names_the_image(tmp_path: Path) -> None:
    base = _layer(tmp_path, "base", {"etc/os-release": "ID=debian\n"})
    top = _layer(tmp_path, "top", {"usr/local/bin/tool": "#!/bin/sh\n"})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM scratch\nENV A=1 \\\n    B="two words"\nUSER 1000\nCMD ["tool", "--x"]\n')
    blobs = _archive(tmp_path, [base, top], dockerfile)
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(blobs["index.json"])
    entry = index["manifests"][0]
    assert entry["annotations"]["io.containerd.image.name"] == "example.test/img:1"
    manifest = json.loads(blobs[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert config["config"]["Cmd"] == ["tool", "--x"] and config["config"]["User"] == "1000"
    assert {"A=1", "B=two words"} <= set(config["config"]["Env"])
    first = blobs[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    with tarfile.open(fileobj=io.BytesIO(first)) as layer_tar:
        assert "./etc/os-release" in layer_tar.getnames()


def test_same_layers_give_the_same_manifest_digest(tmp_path: Path) -> None:
    layer = _layer(tmp_path, "l", {"a": "1"})
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    first = oci.image_documents(ref="x:1", dockerfile=dockerfile, layers=[layer]).manifest_digest
    second = oci.image_documents(ref="x:1", dockerfile=dockerfile, layers=[layer]).manifest_digest
    assert first == second


def test_a_layer_changed_after_its_digest_was_recorded_is_refused(tmp_path: Path) -> None:
    layer = _layer(tmp_path, "l", {"a": "1"})
    (layer / "a").write_text("changed")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    with pytest.raises(oci.ArchiveError, match="changed since it was built"):
        oci.write_archive(io.BytesIO(), ref="x:1", dockerfile=dockerfile, layers=[layer])


def test_env_without_equals_is_refused_with_the_fix(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nENV A 1\n")
    with pytest.raises(oci.ArchiveError, match="KEY=VALUE"):
        oci.dockerfile_config(dockerfile)


def test_one_layer_image_of_host_files_is_reproducible_and_runs_its_entrypoint(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF pretend")
    binary.chmod(0o755)
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    digest = oci.write_image(first, "graft.local/pause:v1", {"/pause": binary}, entrypoint=["/pause"])
    assert oci.write_image(second, "graft.local/pause:v1", {"/pause": binary}, entrypoint=["/pause"]) == digest
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    entry = json.loads(blobs["index.json"])["manifests"][0]
    assert entry["digest"] == digest and entry["annotations"]["io.containerd.image.name"] == "graft.local/pause:v1"
    manifest = json.loads(blobs[f"blobs/sha256/{digest.split(':')[1]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["Env"] == ["PATH=/"]
    with tarfile.open(fileobj=io.BytesIO(blobs[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"])) as layer:
        members = {m.name: m for m in layer.getmembers()}
    assert members["pause"].mode == 0o755 and members["tmp"].mode == 0o1777
