"""Install the light core and the operator extra into fresh venvs, as users and the operator image do.

Real pip, real wheels (from the package registry or the pip cache), the project built with its declared
build requirements (build isolation): the core stays under 100 MB and runs validate/crd, the operator
extra starts `graft operator` without Ray or torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CORE_LIMIT_BYTES = 100 * 1024 * 1024


def _install(tmp_path: Path, lock: str) -> Path:
    """A fresh venv holding exactly `lock` plus this checkout (a real wheel build); returns its bin dir."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--require-hashes", "-r", str(REPO / lock)], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, timeout=900, cwd=tmp_path)
    return env_dir / "bin"


VENV_OWN = ("pip", "setuptools", "pkg_resources", "_distutils_hack")  # in every venv, not installed by us


def _size(site: Path) -> int:
    """Bytes that `pip install` added to site-packages (what a fresh venv ships is not counted)."""
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()
               and not f.relative_to(site).parts[0].startswith(VENV_OWN))


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the venv holds
    return subprocess.run([str(bin_dir / "graft"), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)


def _importable(bin_dir: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(bin_dir / "python"), "-c", probe], timeout=60).returncode == 0


def test_core_install_is_small_and_validates_specs(tmp_path: Path) -> None:
    bin_dir = _install(tmp_path, "locks/core.txt")
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert _size(site) < CORE_LIMIT_BYTES, f"core install is {_size(site) / 2**20:.0f} MiB"
    assert _run(bin_dir, "validate", "examples/finetune.yaml").returncode == 0
    crd = _run(bin_dir, "crd")
    assert crd.returncode == 0 and "kind: CustomResourceDefinition" in crd.stdout
    for heavy in ("torch", "ray", "kopf", "kubernetes", "transformers"):
        assert not _importable(bin_dir, heavy), heavy
    logs = _run(bin_dir, "logs", "nosuchjob", "-n", "nowhere", "--kubeconfig", str(tmp_path / "no-kubeconfig"))
    assert logs.returncode == 1 and logs.stderr.startswith("graft logs: cannot read FineTuneJob nosuchjob"), logs.stderr


def test_operator_extra_starts_the_operator_without_ray_or_torch(tmp_path: Path) -> None:
    bin_dir = _install(tmp_path, "locks/operator-image.txt")
    help_text = _run(bin_dir, "operator", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--resync-seconds" in help_text.stdout
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import graft.operator.handlers"], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    for heavy in ("torch", "ray"):
        assert not _importable(bin_dir, heavy), heavy


def test_version_matches_the_built_distribution(tmp_path: Path) -> None:
    bin_dir = _install(tmp_path, "locks/core.txt")
    out = _run(bin_dir, "--version").stdout.strip()
    meta = subprocess.run([str(bin_dir / "python"), "-c", "from importlib.metadata import version; print(version('graft-operator'))"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert out == f"graft {meta}"
    assert sys.version_info >= (3, 11)
