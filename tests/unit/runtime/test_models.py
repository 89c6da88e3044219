"""Fetch, verify and load artifacts from real files, a real HTTP server and a real S3-compatible server."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from functools import partial

import numpy as np
import pytest

from mlsteward_runtime.contracts import ArtifactFormat, ArtifactRef
from mlsteward_runtime.errors import ModelLoadError
from mlsteward_runtime.models import fetch_artifact, load_model, sha256_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name,fmt", [("lr.skops", "skops"), ("lr.joblib", "joblib"), ("lr.pkl", "pickle")])
def test_load_formats_predict_like_sklearn(artifacts, iris, iris_lr, name, fmt):
    path, digest = artifacts[name]
    m = load_model(ArtifactRef(uri=str(path), sha256=digest, format=fmt))
    X, _ = iris
    np.testing.assert_array_equal(m.predict(X), iris_lr.predict(X))
    np.testing.assert_allclose(m.predict_proba(X), iris_lr.predict_proba(X))
    pred, proba = m.predict_both(X)
    np.testing.assert_array_equal(pred, iris_lr.predict(X))
    assert m.n_features == 4 and m.is_classifier and m.classes == [0, 1, 2] and m.sha256 == digest


def test_onnx_matches_sklearn(artifacts, iris, iris_lr):
    path, digest = artifacts["lr.onnx"]
    m = load_model(ArtifactRef(uri=f"file://{path}", sha256=digest, format="onnx"))
    X, _ = iris
    assert m.n_features == 4 and m.is_classifier and m.classes == [0, 1, 2]
    assert (m.predict(X) == iris_lr.predict(X)).mean() > 0.98  # float32 inside ONNX
    np.testing.assert_allclose(m.predict_proba(X), iris_lr.predict_proba(X), atol=1e-4)


def test_forest_skops_trusts_tree_type(artifacts, cancer_rf):
    path, digest = artifacts["rf.skops"]
    m = load_model(ArtifactRef(uri=str(path), sha256=digest))
    est, X = cancer_rf
    np.testing.assert_array_equal(m.predict(X), est.predict(X))
    np.testing.assert_array_equal(m.predict_both(X)[0], est.predict(X))


def test_digest_mismatch_names_both_and_never_deserializes(tmp_path):
    # A pickle that would create a file when unpickled proves nothing was deserialized.
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(Evil()))
    wrong = "0" * 64
    with pytest.raises(ModelLoadError) as ei:
        load_model(ArtifactRef(uri=str(p), sha256=wrong, format="pickle"))
    assert ei.value.reason == "DigestMismatch"
    assert wrong in ei.value.message and sha256_file(p) in ei.value.message
    assert not marker.exists()


def test_pickle_without_digest_refused_unless_allowed(artifacts, iris):
    path, _ = artifacts["lr.pkl"]
    with pytest.raises(ModelLoadError) as ei:
        load_model(ArtifactRef(uri=str(path), format="pickle"))
    assert ei.value.reason == "UnverifiedRefused"
    m = load_model(ArtifactRef(uri=str(path), format="pickle"), allow_unverified=True)
    assert m.predict(iris[0][:2]).shape == (2,)


def test_skops_untrusted_type_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    # os.system is a function outside the allow-list; skops reports it and the loader must refuse it.
    est = FunctionTransformer(func=os.system)
    p = tmp_path / "bad.skops"
    sio.dump(est, p)
    with pytest.raises(ModelLoadError) as ei:
        load_model(ArtifactRef(uri=str(p), sha256=sha256_file(p)))
    assert ei.value.reason == "UntrustedTypes" and "posix.system" in ei.value.message


def test_garbage_bytes_are_load_failed(tmp_path):
    p = tmp_path / "x.skops"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError) as ei:
        load_model(ArtifactRef(uri=str(p), sha256=hashlib.sha256(b"not a zip").hexdigest()))
    assert ei.value.reason == "LoadFailed"


def test_missing_file_is_fetch_failed(tmp_path):
    with pytest.raises(ModelLoadError) as ei:
        fetch_artifact(str(tmp_path / "nope.skops"))
    assert ei.value.reason == "FetchFailed"
    with pytest.raises(ModelLoadError) as ei:
        fetch_artifact("ftp://example/x")
    assert ei.value.reason == "FetchFailed"


def test_fetch_over_http(artifacts):
    path, digest = artifacts["lr.skops"]
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        m = load_model(ArtifactRef(uri=f"{base}/lr.skops", sha256=digest))
        assert m.sha256 == digest
        with pytest.raises(ModelLoadError) as ei:
            fetch_artifact(f"{base}/missing.skops")
        assert ei.value.reason == "FetchFailed" and "404" in ei.value.message
    finally:
        srv.shutdown()


def test_fetch_from_s3_compatible_server(artifacts, monkeypatch, iris, iris_lr):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        s3.create_bucket(Bucket="models")
        path, digest = artifacts["lr.skops"]
        s3.put_object(Bucket="models", Key="iris/lr.skops", Body=path.read_bytes())
        m = load_model(ArtifactRef(uri="s3://models/iris/lr.skops", sha256=digest, format=ArtifactFormat.skops))
        np.testing.assert_array_equal(m.predict(iris[0]), iris_lr.predict(iris[0]))
        with pytest.raises(ModelLoadError) as ei:
            fetch_artifact("s3://models/iris/none.skops")
        assert ei.value.reason == "FetchFailed"
    finally:
        server.stop()
