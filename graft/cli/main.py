"""`graft` command line: validate specs, print CRDs, run a job locally, run the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from graft.api.errors import SpecError


def _cmd_validate(args: argparse.Namespace) -> int:
    from graft.api.load import parse_object, read_documents

    failed = 0
    for path in args.files:
        try:
            docs = read_documents(path)
            for doc in docs:
                obj = parse_object(doc, source=path)
                name = getattr(obj, "metadata").name
                print(f"{path}: {doc.get('kind', 'FineTuneJob')}/{name} is valid")
        except SpecError as exc:
            failed += 1
            print(exc.report(), file=sys.stderr)
    return 1 if failed else 0


def _cmd_crd(args: argparse.Namespace) -> int:
    from graft.api.crd import render_crds

    text = render_crds()
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _lazy(module: str, func: str = "main") -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graft", description="Fine-tune, tune and serve pretrained models on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check FineTuneJob / ModelEndpoint files and print every error")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("crd", help="print the CustomResourceDefinitions generated from the API models")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_crd)

    from graft.cli import commands

    commands.register(sub, _lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
