"""The `mlsteward` command line: one console script, one subcommand per verb.

Each verb lives in `mlsteward_runtime.commands.<verb>` and exposes `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Verb modules import their heavy dependencies inside `run`, so `mlsteward --help` stays fast.
A `UsageError` (bad flags, unreadable input, invalid data) prints one line and exits 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mlsteward_runtime.errors import UsageError

# Verb name -> module under mlsteward_runtime.commands.
VERBS: dict[str, str] = {
    "serve": "serve",
    "route": "route",
    "validate": "validate",
    "train": "train",
    "profile": "profile",
    "register": "register",
    "drift": "drift",
    "ab": "ab",
    "card": "card",
    "report": "report",
    "operator": "operator",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message on one line with the program name."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlsteward",
        description="Serve, route, validate, profile and compare scikit-learn models; run the mlsteward operator.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, module_name in VERBS.items():
        try:
            module = importlib.import_module(f"mlsteward_runtime.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mlsteward_runtime.commands.{module_name}":
                raise
            continue  # verb not built yet
        p = sub.add_parser(verb, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"mlsteward {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mlsteward drift ... | head`). Point stdout at /dev/null so that the interpreter's
        # final flush does not raise again, as the Python documentation on SIGPIPE recommends.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
