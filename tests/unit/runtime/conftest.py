"""Tiny real models for the runtime tests, fit on scikit-learn's bundled data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlsteward_runtime.models import dump_model


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def iris_lr(iris):
    X, y = iris
    return LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="session")
def cancer_rf():
    X, y = load_breast_cancer(return_X_y=True)
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y), X


@pytest.fixture(scope="session")
def iris_reg(iris):
    X, _ = iris
    return LinearRegression().fit(X[:, :3], X[:, 3])


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, iris_lr, cancer_rf) -> dict[str, tuple[Path, str]]:
    """Artifacts on disk with their digests: {name: (path, sha256)}."""
    d = tmp_path_factory.mktemp("artifacts")
    out: dict[str, tuple[Path, str]] = {}
    for name, est, fmt in [
        ("lr.skops", iris_lr, "skops"),
        ("lr.joblib", iris_lr, "joblib"),
        ("lr.pkl", iris_lr, "pickle"),
        ("lr.onnx", iris_lr, "onnx"),
        ("rf.skops", cancer_rf[0], "skops"),
    ]:
        p = d / name
        out[name] = (p, dump_model(est, p, fmt))
    return out
