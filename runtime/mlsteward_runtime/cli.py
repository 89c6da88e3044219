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
from collections.abc import Mapping, Sequence

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
    "status": "status",
    "operator": "operator",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message on one line with the program name."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


DESCRIPTION = "Serve, route, validate, profile and compare scikit-learn models; run the mlsteward operator."


def build_parser(prog: str = "mlsteward", verbs: Mapping[str, str] = VERBS,
                 description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """The parser of `prog` with the subcommands `verbs` (verb name -> module under mlsteward_runtime.commands)."""
    parser = _Parser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, module_name in verbs.items():
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


def main(argv: Sequence[str] | None = None, *, prog: str = "mlsteward", verbs: Mapping[str, str] = VERBS,
         description: str = DESCRIPTION) -> int:
    """Runs the verb `argv` names (default: the command line) and returns the exit code. `prog`, `verbs` and
    `description` let another console script offer some of the verbs (`kubectl-mlsteward`: the cluster verbs)."""
    parser = build_parser(prog, verbs, description)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"{prog} {args.verb}: error: {exc}", file=sys.stderr)
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
