"""The docs' maps of guarantees to tests (docs/testing.md, docs/tenancy.md) name only tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "testing.md", ROOT / "docs" / "tenancy.md"]
REFERENCE = re.compile(r"`((?:tests/)?(?:unit|integration|e2e|kuberay)/[\w*]+\.py)(?:::(\w+))?`")


BARE_NAME = re.compile(r"`(test_\w+)`")


def _references(doc: Path) -> list[tuple[str, str | None]]:
    return [(m.group(1).removeprefix("tests/"), m.group(2)) for m in REFERENCE.finditer(doc.read_text())]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_the_doc_names_tests(doc: Path) -> None:
    assert len(_references(doc)) > 20


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_file_the_doc_names_exists(doc: Path) -> None:
    missing = [f for f, _ in _references(doc) if not list((ROOT / "tests").glob(f))]
    assert not missing, f"{doc.name} names test files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_test_the_doc_names_exists_in_its_file(doc: Path) -> None:
    missing = [f"{f}::{name}" for f, name in _references(doc) if name and name not in _test_names(ROOT / "tests" / f)]
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_test_named_without_its_file_exists_somewhere(doc: Path) -> None:
    everywhere = set().union(*(_test_names(path) for path in (ROOT / "tests").rglob("test_*.py")))
    missing = sorted({m.group(1) for m in BARE_NAME.finditer(doc.read_text())} - everywhere)
    assert not missing, f"{doc.name} names tests that exist in no test module: {missing}"
