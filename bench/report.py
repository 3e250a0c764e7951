"""Shared by the benchmarks: the machine they ran on, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HEAD = "# Benchmarks\n\nEach section lists the command that produced its figures, the machine and the date.\n"


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace (or append) the section under `heading`; the rest of the file belongs to other benchmarks."""
    current = path.read_text() if path.exists() else HEAD  # read right before writing
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")


def environment(threads: int, packages: tuple[str, ...] = ("torch", "transformers")) -> dict[str, str]:
    """Machine, date and versions of `packages`, for the figures' caption."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = ", ".join(f"{name} {importlib.import_module(name).__version__}" for name in packages)
    return {
        "machine": f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch threads {threads}",
        "date": dt.date.today().isoformat(),
        "versions": f"Python {platform.python_version()}, {versions}",
    }


def publish(script: str, argv: list[str] | None, result: Any, render: Callable[[Any, str], str], heading: str,
            json_path: Path | None, doc_path: Path | None) -> None:
    """Print the section `render` makes of `result` (with the command line that ran `script`), save
    `result` as JSON to `json_path` and write the section into `doc_path`, each when given."""
    command = " ".join([f"python bench/{script}", *(sys.argv[1:] if argv is None else argv)])
    text = render(result, command)
    print(text)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    if doc_path:
        write_section(doc_path, heading, text)
