"""How text the tenant wrote travels on a command line: base64 (standard alphabet), so no byte of it
appears raw in a RayJob entrypoint or a Ray job submission, whatever shell runs them.

The standard alphabet (`A-Z a-z 0-9 + / =`) holds no shell metacharacter, and a value never begins
with `-`, so argparse never mistakes it for an option. The operator encodes (`encode_arg`), the
job decodes (`decode_arg`); both sides import it from here.
"""

from __future__ import annotations

import base64
import binascii


def encode_arg(text: str) -> str:
    """`text` (UTF-8) as standard base64."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_arg(value: str) -> str:
    """The text `encode_arg` encoded; ValueError on anything that is not strict base64 of UTF-8."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise ValueError(f"not base64 of UTF-8 text: {exc}") from exc
