"""Run the benchmarks (what `make bench` calls): serving, router overhead, then drift computation.

Arguments are passed to bench/serve.py (for example --quick), except --no-evidently, which goes to bench/drift.py
(measure the drift check without Evidently, e.g. when its venv cannot be built). --quick also shortens the router
and drift runs. See bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    args = sys.argv[1:]
    quick = "--quick" in args
    serve = subprocess.run([sys.executable, str(HERE / "serve.py"), *[a for a in args if a != "--no-evidently"]])
    router = subprocess.run([sys.executable, str(HERE / "router_overhead.py"),
                             *(["--duration", "3"] if quick else [])])
    drift = subprocess.run([sys.executable, str(HERE / "drift.py"),
                            *[a for a in args if a in ("--quick", "--no-evidently")]])
    return serve.returncode or router.returncode or drift.returncode


if __name__ == "__main__":
    sys.exit(main())
