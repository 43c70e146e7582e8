"""The ``myelin`` command line."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

EXAMPLES = """examples:
  myelin info            versions, threads and the importance estimators available
  myelin --version
"""


def _info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .importance import ESTIMATORS

    print(f"myelin {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'available' if torch.cuda.is_available() else 'not available'}")
    print("importance estimators:")
    for entry in ESTIMATORS.entries():
        print(f"  {entry.name:<16} {entry.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="myelin", description="Stop neural networks from forgetting.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"myelin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show versions and what is available")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))
