"""`mlsteward serve` and `mlsteward validate` on crafted and skewed model files, as real processes on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sklearn

from mlsteward_runtime.cli import main

from .helpers import REPO, ServerProcess
from .trust_files import call_node, json_node, other_minor, with_attribute, with_sklearn_version


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _exit_or_ready(server: ServerProcess, timeout: float = 60.0) -> tuple[int, str]:
    """Wait until the server exits (returning its code and stderr); fail if it ever reports ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return server.proc.returncode, server.stderr()
        try:
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready:
            err = server.stop()
            raise AssertionError(f"the server became ready: {err[-2000:]}")
        time.sleep(0.1)
    err = server.stop()
    raise AssertionError(f"the server neither exited nor became ready in {timeout}s: {err[-2000:]}")


@pytest.fixture(scope="module")
def lr_bytes(artifacts):
    return artifacts["lr.skops"][0].read_bytes()


def _exit_node() -> dict:
    return {"__class__": "exit", "__module__": "builtins", "__loader__": "ListNode", "content": [json_node(0)]}


@pytest.mark.parametrize("payload", ["builtins.exit", "numpy.savetxt"])
def test_serve_never_becomes_ready_on_a_crafted_file(lr_bytes, tmp_path, payload):
    target = tmp_path / "written.txt"
    node = _exit_node() if payload == "builtins.exit" else call_node("numpy", "savetxt", str(target), [[1.0]])
    model = tmp_path / "model.skops"
    sha = _write(model, with_attribute(lr_bytes, node))
    server = ServerProcess(["--model", str(model), "--name", "evil", "--sha256", sha])
    code, err = _exit_or_ready(server)
    assert code == 3 and "UntrustedTypes" in err and payload in err, err
    assert "Traceback" not in err and not target.exists()


def _validate(*args: str, cwd: Path) -> tuple[int, dict, str]:
    out = cwd / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "runtime") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "mlsteward_runtime.cli", "validate", *args, "--result-file",
                           str(out)], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    return proc.returncode, json.loads(out.read_text()) if out.exists() else {}, proc.stderr


def test_validate_fails_a_crafted_file_with_untrusted_types(lr_bytes, tmp_path):
    target = tmp_path / "written.txt"
    model = tmp_path / "model.skops"
    sha = _write(model, with_attribute(lr_bytes, call_node("numpy", "savetxt", str(target), [[1.0]])))
    code, result, err = _validate("--uri", str(model), "--sha256", sha, cwd=tmp_path)
    assert code == 1, err
    assert result["phase"] == "Failed" and result["reason"] == "UntrustedTypes"
    assert "numpy.savetxt" in result["message"] and not target.exists()


def test_validate_refuses_version_skew_unless_allowed(lr_bytes, tmp_path, capsys):
    old = other_minor(sklearn.__version__)
    model = tmp_path / "model.skops"
    sha = _write(model, with_sklearn_version(lr_bytes, old))
    out = tmp_path / "r.json"
    assert main(["validate", "--uri", str(model), "--sha256", sha, "--result-file", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["reason"] == "SklearnVersionSkew" and old in result["message"]
    assert main(["validate", "--uri", str(model), "--sha256", sha, "--result-file", str(out),
                 "--allow-version-skew"]) == 0
    assert json.loads(out.read_text())["phase"] == "Ready"
    capsys.readouterr()


def test_serve_refuses_version_skew(lr_bytes, tmp_path):
    model = tmp_path / "model.skops"
    sha = _write(model, with_sklearn_version(lr_bytes, other_minor(sklearn.__version__)))
    code, err = _exit_or_ready(ServerProcess(["--model", str(model), "--name", "skewed", "--sha256", sha]))
    assert code == 3 and "SklearnVersionSkew" in err and sklearn.__version__ in err


def test_serve_allows_version_skew_when_told_and_predicts_as_the_model(lr_bytes, tmp_path, artifacts):
    """The per-version override reaches the predictor's loader: the skewed file serves, and answers as sklearn."""
    import numpy as np
    import skops.io as sio

    model = tmp_path / "model.skops"
    sha = _write(model, with_sklearn_version(lr_bytes, other_minor(sklearn.__version__)))
    server = ServerProcess(["--model", str(model), "--name", "skewed", "--sha256", sha, "--allow-version-skew"])
    try:
        server.wait_ready()
        rows = np.random.default_rng(0).normal(size=(3, 4)).tolist()
        answer = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=10).json()
    finally:
        server.stop()
    estimator = sio.loads(lr_bytes, trusted=sio.get_untrusted_types(data=lr_bytes))
    assert answer["predictions"] == estimator.predict(np.asarray(rows)).tolist()


# --------------------------------------------------------------------------------------------------------------
# --format from the extension
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr.joblib", "lr.onnx", "lr.pkl"])
def test_validate_infers_the_format_from_the_extension(artifacts, name, tmp_path, capsys):
    path, digest = artifacts[name]
    out = tmp_path / "r.json"
    assert main(["validate", "--uri", f"file://{path}", "--sha256", digest, "--result-file", str(out)]) == 0
    assert json.loads(out.read_text())["phase"] == "Ready"
    capsys.readouterr()


def test_unknown_extension_without_format_is_a_usage_error(artifacts, tmp_path, capsys):
    path, digest = artifacts["lr.skops"]
    blob = tmp_path / "model.bin"
    blob.write_bytes(path.read_bytes())
    assert main(["validate", "--uri", str(blob), "--sha256", digest, "--result-file", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--format" in err and "model.bin" in err and "Traceback" not in err
    # serve decides before it loads anything; a process that started serving would never return here.
    server = ServerProcess(["--model", str(blob), "--name", "iris", "--sha256", digest])
    code, err = _exit_or_ready(server)
    assert code == 2 and "--format" in err and "Traceback" not in err


def test_serve_infers_joblib_from_the_extension(artifacts):
    path, digest = artifacts["lr.joblib"]
    server = ServerProcess(["--model", str(path), "--name", "iris", "--sha256", digest])
    try:
        server.wait_ready()
        r = httpx.post(f"{server.url}/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
        assert r.status_code == 200
    finally:
        server.stop()


def test_model_version_allow_version_skew_reaches_validate_and_serve(lr_bytes, tmp_path, capsys):
    # The operator renders the validation Job's arguments and the predictors' RuntimeConfig from the spec: the
    # per-ModelVersion override must reach both, and nothing else may turn the refusal off.
    from mlsteward_operator.api.modelversion import ModelVersion
    from mlsteward_operator.modeldeployment.render import runtime_config
    from mlsteward_operator.modelversion.render import validation_args

    model = tmp_path / "model.skops"
    sha = _write(model, with_sklearn_version(lr_bytes, other_minor(sklearn.__version__)))
    verdicts = {}
    for allow in (False, True):
        mv = ModelVersion.model_validate({"metadata": {"name": "iris-1-0-0", "namespace": "ml"}, "spec": {
            "model": "iris", "version": "1.0.0", "artifact": {"uri": str(model), "sha256": sha},
            "framework": {"name": "sklearn", "allowVersionSkew": allow}}})
        args = validation_args(mv)
        args[args.index("--result-file") + 1] = str(tmp_path / "r.json")
        main(args)
        verdicts[allow] = json.loads((tmp_path / "r.json").read_text())["reason"]
        assert runtime_config(mv).allow_version_skew is allow
    assert verdicts == {False: "SklearnVersionSkew", True: "Validated"}
    capsys.readouterr()
