"""The ``cloudqueue`` command."""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    example = Path(__file__).resolve().parent.parent / "examples" / "embedded_quickstart.py"
    if not example.exists():
        print(f"the demo needs a source checkout: {example.name} not found", file=sys.stderr)
        return 2
    runpy.run_path(str(example), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudqueue",
                                     description="A durable task queue for cloud functions.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the embedded example: enqueue and run tasks")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":

    sys.exit(main())
