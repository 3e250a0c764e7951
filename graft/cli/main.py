"""`graft` command line: validate specs, print CRDs, run a job locally, run the operator.

Exit codes, the same for every command (docs/cli.md):
  0  done
  1  the work itself failed (training failed, an object or a log not found, a cluster unreachable)
  2  bad input: a spec that does not validate, a wrong flag or argument
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from graft import __version__
from graft.api.errors import SpecError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FORMATS = ("text", "json", "yaml")


def dump(data: Any, fmt: str) -> str:
    """`data` as JSON or YAML text, ending in a newline."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, width=120))


def _cmd_validate(args: argparse.Namespace) -> int:
    from graft.api.load import parse_object, read_documents

    reports: list[dict[str, Any]] = []
    for path in args.files:
        try:
            for doc in read_documents(path):
                obj = parse_object(doc, source=path)
                name = getattr(obj, "metadata").name
                reports.append({"file": path, "kind": doc.get("kind", "FineTuneJob"), "name": name, "valid": True, "errors": []})
                if args.output == "text":
                    print(f"{path}: {doc.get('kind', 'FineTuneJob')}/{name} is valid")
        except SpecError as exc:
            reports.append({"file": path, "valid": False, "errors": [{"path": e.path, "message": e.message} for e in exc.errors]})
            if args.output == "text":
                print(exc.report(), file=sys.stderr)
    if args.output != "text":
        sys.stdout.write(dump({"results": reports}, args.output))
    return EXIT_BAD_INPUT if any(not r["valid"] for r in reports) else EXIT_OK


def _cmd_crd(args: argparse.Namespace) -> int:
    from graft.api.crd import crd_documents, render_crds

    if args.output == "json":
        text = dump({"apiVersion": "v1", "kind": "List", "items": crd_documents()}, "json")
    else:
        text = render_crds()
    if args.output_file:
        with open(args.output_file, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from graft.cli.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return EXIT_OK


def _lazy(module: str, func: str = "main") -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graft", description="Fine-tune, tune and serve pretrained models on Ray.")
    parser.add_argument("--version", action="version", version=f"graft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check FineTuneJob / ModelEndpoint files and print every error")
    p.add_argument("files", nargs="+")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text", help="output format (default: text)")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("crd", help="print the CustomResourceDefinitions generated from the API models")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format (default: yaml)")
    p.add_argument("--output-file", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_cmd_crd)

    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=_cmd_completion)

    from graft.cli import commands

    commands.register(sub, _lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 (argparse), like bad specs
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
