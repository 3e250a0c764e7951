"""Subcommands whose code lives in other modules (imported only when run)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    """Each module that adds a subcommand adds its parser here."""
    from graft.cli.run import add_parser as run_parser
    from graft.operator.main import add_arguments as operator_arguments

    run_parser(sub, lazy)

    p = sub.add_parser("operator", help="run the Graft operator (kopf) against a Kubernetes cluster")
    operator_arguments(p)
    p.set_defaults(func=lazy("graft.operator.main", "main"))

    from graft.cli.logs import add_parser as logs_parser

    logs_parser(sub, lazy)
