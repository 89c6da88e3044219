"""Run both benchmarks (what `make bench` calls): the serving benchmark, then the router overhead.

Arguments are passed to bench/serve.py (for example --quick). See bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    serve = subprocess.run([sys.executable, str(HERE / "serve.py"), *sys.argv[1:]])
    router = subprocess.run([sys.executable, str(HERE / "router_overhead.py"),
                             *(["--duration", "3"] if "--quick" in sys.argv[1:] else [])])
    return serve.returncode or router.returncode


if __name__ == "__main__":
    sys.exit(main())
