"""Shared base for every API model: camelCase on the wire, unknown fields rejected."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

API_GROUP = "graft.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION: Final = "graft.dev/v1alpha1"  # f"{API_GROUP}/{API_VERSION}", spelled out for the type checker


class ApiModel(BaseModel):
    """Strict wire model: camelCase aliases, snake_case attributes, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible camelCase document, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
