"""Subcommands whose code lives in other modules (imported only when run)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    """Each module that adds a subcommand adds its parser here."""
