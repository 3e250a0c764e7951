"""The lock files pin every requirement of pyproject.toml, with hashes, one version everywhere."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
LOCKS = {
    "requirements.lock": ["all", "examples", "test"],
    "locks/ray-image.txt": ["train", "serve", "datasets", "examples"],
    "locks/operator-image.txt": ["operator"],
    "locks/core.txt": [],
}


def pins(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / path).read_text().splitlines():
        if m := PIN.match(line):
            out[canonicalize_name(m["name"])] = m["version"]
    return out


def requirements(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        for r in PROJECT["optional-dependencies"][extra]:
            req = Requirement(r)
            if canonicalize_name(req.name) == canonicalize_name(PROJECT["name"]):
                reqs += requirements(sorted(req.extras))  # `all` names the other extras
            else:
                reqs.append(req)
    return reqs


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_requirement_within_its_range(lock: str) -> None:
    pinned = pins(lock)
    missing = [str(r) for r in requirements(LOCKS[lock]) if canonicalize_name(r.name) not in pinned]
    outside = [f"{r} (locked {pinned[canonicalize_name(r.name)]})" for r in requirements(LOCKS[lock])
               if canonicalize_name(r.name) in pinned and pinned[canonicalize_name(r.name)] not in r.specifier]
    assert (missing, outside) == ([], []), "pyproject.toml changed: run scripts/lock.sh"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_carries_a_hash(lock: str) -> None:
    text = (REPO / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])  # after the header line
    unhashed = [e.split()[0] for e in entries if PIN.match(e) and "--hash=sha256:" not in e]
    assert unhashed == []


def test_image_locks_use_the_versions_of_the_development_lock() -> None:
    dev = pins("requirements.lock")
    differ = [(lock, n, v, dev.get(n)) for lock in LOCKS for n, v in pins(lock).items() if dev.get(n) != v]
    assert differ == []


def test_operator_and_core_locks_hold_no_ray_and_no_torch() -> None:
    for lock in ("locks/operator-image.txt", "locks/core.txt"):
        assert {"ray", "torch", "deepspeed", "transformers"} & set(pins(lock)) == set(), lock
    assert "kubernetes" not in pins("locks/core.txt")
