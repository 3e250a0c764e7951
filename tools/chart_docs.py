"""Generate the chart's values README and values.schema.json from values.yaml.

    python tools/chart_docs.py           # rewrite charts/graft/README.md and values.schema.json
    python tools/chart_docs.py --check   # exit 1 if either is out of date (the unit tests run this)

Each value's description is its `# --` comment (continued on the following `#` lines). The schema
takes each value's type from its default, forbids unknown keys at every level whose keys the chart
defines (maps that users fill, such as `resources` or `podAnnotations`, stay open), and adds the
constraints listed in CONSTRAINTS.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "graft"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
# Constraints beyond the type of the default, by dotted value path.
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "image.pullPolicy": {"enum": PULL_POLICIES},
    "operator.rayImagePullPolicy": {"enum": PULL_POLICIES},
    "operator.submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "SidecarMode"]},
    "replicas": {"minimum": 1},
    "operator.resyncSeconds": {"exclusiveMinimum": 0},
    "metrics.port": {"minimum": 1, "maximum": 65535},
    "livenessProbe.port": {"minimum": 1, "maximum": 65535},
    "watchNamespaces": {"items": {"type": "string"}},  # names are checked by the template, with a clearer message
    "hostPathStorage.namespaces": {"items": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
    "hostPathStorage.path": {"pattern": "^/"},
}


@dataclass(frozen=True)
class Value:
    path: str
    description: str
    default: Any


def documented_values(text: str) -> list[Value]:
    """Every value that has its own `# --` comment, in file order."""
    data = yaml.safe_load(text)
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    out: list[Value] = []
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [m["key"]])
        stack.append((indent, m["key"]))
        comment: list[str] = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip().lstrip("#").strip())
            if lines[j].strip().startswith("# --"):
                break
            j -= 1
        if comment and lines[j].strip().startswith("# --"):
            comment[0] = comment[0].removeprefix("--").strip()
            out.append(Value(path, " ".join(comment), _lookup(data, path)))
    return out


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def _type_schema(default: Any) -> dict[str, Any]:
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, float):
        return {"type": "number"}
    if isinstance(default, str):
        return {"type": "string"}
    if isinstance(default, list):
        return {"type": "array"}
    return {"type": "object"}


def schema(text: str) -> dict[str, Any]:
    """values.schema.json: types from the defaults, closed where the chart defines the keys."""
    documented = {v.path for v in documented_values(text)}

    def node(value: Any, path: str) -> dict[str, Any]:
        s = _type_schema(value)
        if isinstance(value, dict) and value and path not in documented:
            # A group of documented values: its keys are the chart's, so typos are refused.
            s["properties"] = {k: node(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            s["additionalProperties"] = False
        s.update(CONSTRAINTS.get(path, {}))
        return s

    root = node(yaml.safe_load(text), "")
    root["properties"]["global"] = {"type": "object"}  # helm passes `global` to every chart
    return {"$schema": "https://json-schema.org/draft-07/schema#", "title": "Graft chart values", **root}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme(text: str) -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    rows = [
        f"| `{v.path}` | {_type_schema(v.default)['type']} | `{json.dumps(v.default)}` | {_cell(v.description)} |"
        for v in documented_values(text)
    ]
    return "\n".join([
        f"# {chart['name']} Helm chart",
        "",
        chart["description"].strip(),
        "",
        f"Chart version {chart['version']}, app version {chart['appVersion']}. Install and upgrade steps:",
        "[docs/install.md](../../docs/install.md). Values are checked against `values.schema.json`:",
        "a misspelt or mistyped value fails `helm install`.",
        "",
        "<!-- Generated by tools/chart_docs.py from values.yaml; do not edit. -->",
        "## Values",
        "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
        *rows,
        "",
    ])


def outputs() -> dict[Path, str]:
    text = (CHART / "values.yaml").read_text()
    return {
        CHART / "README.md": readme(text),
        CHART / "values.schema.json": json.dumps(schema(text), indent=2) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if the generated files are out of date")
    args = p.parse_args(argv)
    stale = [path for path, content in outputs().items() if not path.exists() or path.read_text() != content]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python tools/chart_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path, content in outputs().items():
        path.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
