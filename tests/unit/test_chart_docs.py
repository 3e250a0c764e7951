"""The chart's values README and values.schema.json are generated from values.yaml and up to date."""

from __future__ import annotations

import pytest

from tools.chart_docs import documented_values, main, schema

pytestmark = pytest.mark.unit

VALUES = """\
image:
  # -- Repository of the image.
  repository: r
  # -- Pull policy.
  pullPolicy: IfNotPresent
# -- Replicas, over two
# lines.
replicas: 1
# -- Extra labels (any keys).
podLabels: {}
"""


def test_generated_readme_and_schema_are_up_to_date() -> None:
    assert main(["--check"]) == 0, "run: python tools/chart_docs.py"


def test_descriptions_join_continued_comment_lines() -> None:
    values = {v.path: v for v in documented_values(VALUES)}
    assert values["replicas"].description == "Replicas, over two lines."
    assert values["image.repository"].default == "r"


def test_schema_closes_groups_and_leaves_user_maps_open() -> None:
    s = schema(VALUES)
    assert s["additionalProperties"] is False
    assert s["properties"]["image"]["additionalProperties"] is False
    assert s["properties"]["image"]["properties"]["pullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert s["properties"]["replicas"] == {"type": "integer", "minimum": 1}
    assert s["properties"]["podLabels"] == {"type": "object"}
