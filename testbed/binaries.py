"""The binaries of the control plane, the node and its add-ons, built by scripts/controlplane.sh
(from their Go modules, cached outside the repo), and the kubectl to drive them.

Environment knobs:

* ``GRAFT_CONTROLPLANE_BIN``: use this bin dir instead of running the build script
  (``GRAFT_KUBERAY_CRDS``, ``GRAFT_KUEUE_MANIFESTS``: the CRD and manifest dirs then).
* ``GRAFT_KUBECTL``: the kubectl binary (default: the newest ``kubectl.1.N`` found, else ``kubectl``).

Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from testbed.process import ProcessError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "controlplane.sh"

BASE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "crds")
# The one-node cluster's (testbed/kubenode.py) and its add-ons' (testbed/addons.py). Kueue is apart:
# only the full tier runs it (make test builds everything but Kueue, its longest cold Go build).
NODE_COMPONENTS = ("kubelet", "kube-scheduler", "kube-proxy", "coredns", "pause")
KUBERAY_COMPONENTS = ("kuberay-operator",)
KUEUE_COMPONENTS = ("kueue", "kueue-manifests")


class ControlPlaneError(ProcessError):
    """Build, startup or command failure; the message carries the relevant log tail."""


def find_kubectl() -> str:
    """``$GRAFT_KUBECTL``, else the newest versioned ``kubectl.1.N`` on PATH or next to
    ``kubectl`` (the gcloud dispatcher layout), else ``kubectl``."""
    env = os.environ.get("GRAFT_KUBECTL")
    if env:
        return env
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    plain = shutil.which("kubectl")
    if plain:
        dirs.append(Path(os.path.realpath(plain)).parent)
    best: tuple[int, str] | None = None
    for d in dirs:
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for f in entries:
            m = re.fullmatch(r"kubectl\.1\.(\d+)", f.name)
            if m and os.access(f, os.X_OK) and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), str(f))
    if best:
        return best[1]
    if plain:
        return plain
    raise ControlPlaneError("kubectl not found (set GRAFT_KUBECTL)")


_BUILD: dict[str, Path] = {}


def ensure_binaries(extra: Sequence[str] = ()) -> dict[str, Path]:
    """Run scripts/controlplane.sh for the control plane (plus ``extra`` components, e.g.
    :data:`NODE_COMPONENTS`) once per process; returns {'bin', 'crds', 'kueue'} dirs.

    A cold build takes tens of minutes (see docs/testing-control-plane.md): run the
    script before pytest so pytest-timeout does not cut it short.
    """
    binaries = [c for c in (*BASE_COMPONENTS, *extra) if "crds" not in c and "manifests" not in c]
    if _BUILD and all(os.access(_BUILD["bin"] / n, os.X_OK) for n in binaries):
        return _BUILD
    override = os.environ.get("GRAFT_CONTROLPLANE_BIN")
    if override:
        bin_dir = Path(override)
        found = {
            "KUBERAY_CRDS": os.environ.get("GRAFT_KUBERAY_CRDS", str(bin_dir.parent.parent / "kuberay-crds-v1.6.0")),
            "KUEUE_MANIFESTS": os.environ.get("GRAFT_KUEUE_MANIFESTS", str(bin_dir.parent.parent / "kueue-manifests-v0.17.0")),
        }
    else:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT), *dict.fromkeys((*BASE_COMPONENTS, *extra))],
            stdout=subprocess.PIPE, stderr=None, text=True,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines:
            raise ControlPlaneError(
                f"{BUILD_SCRIPT} failed (rc={proc.returncode}); stdout:\n{proc.stdout[-4000:]}"
            )
        bin_dir = Path(lines[-1])
        found = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    for name in binaries:
        if not os.access(bin_dir / name, os.X_OK):
            raise ControlPlaneError(f"missing {bin_dir / name} (run scripts/controlplane.sh)")
    _BUILD.update(bin=bin_dir, crds=Path(found.get("KUBERAY_CRDS", bin_dir.parent.parent / "kuberay-crds-v1.6.0")),
                  kueue=Path(found.get("KUEUE_MANIFESTS", bin_dir.parent.parent / "kueue-manifests-v0.17.0")))
    return _BUILD
