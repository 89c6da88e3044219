"""What importing the operator costs and what the runtime may know of it (DESIGN §6).

Importing the operator (its composition root and the kopf handlers) loads no numerical library and none of the
runtime's serving modules: the statistics are imported on the first reconcile that needs them. The runtime never
imports the operator: `mlsteward operator` finds it through an entry point. Each check runs in a fresh interpreter,
since this test process has long imported everything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("scipy", "numpy", "sklearn", "fastapi", "uvicorn", "mlsteward_runtime.app", "mlsteward_runtime.models",
         "mlsteward_runtime.dataplane", "mlsteward_runtime.router", "mlsteward_runtime.stats")


def loaded_after(statement: str) -> list[str]:
    code = textwrap.dedent(f"""
        import sys
        {statement}
        print("\\n".join(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()


def test_importing_the_operator_loads_no_statistics_and_no_serving_module():
    modules = loaded_after("import mlsteward_operator.main, mlsteward_operator.handlers")
    assert "mlsteward_operator.handlers" in modules  # the import ran
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def test_the_distribution_declares_the_operator_entry_point_the_verb_looks_up():
    from mlsteward_runtime.commands import operator as verb

    from mlsteward_operator import main

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"][verb.ENTRY_POINT_GROUP][verb.ENTRY_POINT_NAME]
    module, _, attr = target.partition(":")
    assert module == "mlsteward_operator.main" and getattr(main, attr) is main.run


def test_the_verb_runs_whatever_the_entry_point_names(tmp_path, monkeypatch):
    """An installed distribution (a dist-info with entry_points.txt) under a group of this test's own."""
    from mlsteward_runtime.commands import operator as verb
    from mlsteward_runtime.errors import UsageError

    group = "mlsteward.test-operator"
    (tmp_path / "fakeoperator.py").write_text("calls = []\ndef run(**kwargs):\n    calls.append(kwargs)\n")
    dist = tmp_path / "fakeoperator-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeoperator\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\nrun = fakeoperator:run\n")
    with pytest.raises(UsageError, match="not installed"):
        verb.find_operator(group)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = verb.find_operator(group)
    run(namespaces=["ml"], clusterwide=False, liveness_endpoint=None)
    import fakeoperator  # type: ignore[import-not-found]

    assert fakeoperator.calls == [{"namespaces": ["ml"], "clusterwide": False, "liveness_endpoint": None}]
