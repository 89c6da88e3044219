"""`kubectl mlsteward ...`: the kubectl plugin, i.e. the console script `kubectl-mlsteward`.

kubectl runs any executable named `kubectl-<name>` on PATH for `kubectl <name> ...`, passing the rest of the command
line and nothing else: no flags, no kubeconfig. The plugin offers the verbs that read a cluster (`report`, `card`,
`status`), parsed by the same parser as `mlsteward <verb>`, so the flags are the same: `-n/--namespace`,
`--context` and `--kubeconfig`, read as kubectl reads them ($KUBECONFIG, then ~/.kube/config).

kubectl users also put those flags before the verb (`kubectl mlsteward -n models status iris`); they are moved after
it before parsing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlsteward_runtime import cli

PROG = "kubectl mlsteward"
VERBS = {verb: cli.VERBS[verb] for verb in ("status", "report", "card")}
DESCRIPTION = ("mlsteward's cluster views as a kubectl plugin: the status of a ModelDeployment, its performance "
               "report, the model card of a ModelVersion.")
# kubectl's flags that choose the cluster, which the plugin's verbs take: each takes a value.
_CLUSTER_FLAGS = ("-n", "--namespace", "--context", "--kubeconfig")


def _is_cluster_flag(token: str) -> tuple[bool, bool]:
    """(token is one of the cluster flags, its value is in the next token)."""
    if token in _CLUSTER_FLAGS:
        return True, True
    if any(token.startswith(f"{flag}=") for flag in _CLUSTER_FLAGS[1:]) or (token.startswith("-n")
                                                                            and not token.startswith("--")):
        return True, False
    return False, False


def hoist(argv: Sequence[str]) -> list[str]:
    """`argv` with the cluster flags given before the verb moved to just after it (the verb's parser takes them).
    Anything else before the verb stays where it is, for the top-level parser to accept (-h) or refuse."""
    before: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag, takes_next = _is_cluster_flag(token)
        if flag:
            moved += argv[i:i + 2] if takes_next else [token]
            i += 2 if takes_next else 1
        elif token.startswith("-"):
            before.append(token)
            i += 1
        else:
            return [*before, token, *moved, *argv[i + 1:]]
    return [*before, *moved]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `kubectl mlsteward <verb> ...` (default: the command line) and returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(hoist(args), prog=PROG, verbs=VERBS, description=DESCRIPTION)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
