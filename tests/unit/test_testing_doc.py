"""docs/testing.md's map of guarantees to tests names only tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
REFERENCE = re.compile(r"`((?:tests/)?(?:unit|integration|e2e|kuberay)/[\w*]+\.py)(?:::(\w+))?`")


def _references() -> list[tuple[str, str | None]]:
    return [(m.group(1).removeprefix("tests/"), m.group(2)) for m in REFERENCE.finditer(DOC.read_text())]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_the_doc_names_tests() -> None:
    assert len(_references()) > 40


def test_every_file_the_doc_names_exists() -> None:
    missing = [f for f, _ in _references() if not list((ROOT / "tests").glob(f))]
    assert not missing, f"docs/testing.md names test files that do not exist: {missing}"


def test_every_test_the_doc_names_exists_in_its_file() -> None:
    missing = [f"{f}::{name}" for f, name in _references() if name and name not in _test_names(ROOT / "tests" / f)]
    assert not missing, f"docs/testing.md names tests that do not exist: {missing}"
