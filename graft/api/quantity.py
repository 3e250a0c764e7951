"""Kubernetes resource quantities ("2Gi", "500M", "1.5") as plain numbers."""

from __future__ import annotations

import re
from decimal import Decimal

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str) -> Decimal:
    """Parse a Kubernetes quantity; raises ValueError with the accepted forms."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", value.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"{value!r} is not a quantity; use a number with an optional suffix such as 512Mi, 2Gi or 1.5")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def quantity_bytes(value: str) -> int:
    """A memory quantity in whole bytes."""
    return int(parse_quantity(value))
