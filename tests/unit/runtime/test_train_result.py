"""The retraining Job's result must reach the operator whole: a termination message holds 4 KiB."""

from __future__ import annotations

import json

from mlsteward_runtime.commands.train import MAX_RESULT_BYTES, encode_result
from mlsteward_runtime.contracts import ArtifactRef, InputSpec, ProfileRef, Signature, TrainResult


def _result(**update) -> TrainResult:
    base = TrainResult(
        phase="Succeeded", reason="Trained", message="Trained on 400 rows.",
        artifact=ArtifactRef(uri="s3://models/m/2.skops", sha256="a" * 64),
        reference=ProfileRef(uri="s3://models/m/2.profile.json", sha256="b" * 64),
        metrics={"accuracy": 0.93, "f1_macro": 0.91},
        signature=Signature(inputs=[InputSpec(name=f"feature_{i:03d}") for i in range(200)]),
    )
    return base.model_copy(update=update)


def test_small_result_is_written_unchanged():
    small = _result(signature=None)
    assert encode_result(small) == small.model_dump_json(exclude_none=True)


def test_large_result_stays_valid_json_and_keeps_what_the_operator_needs():
    big = _result(params={"grid": list(range(2000))}, message="x" * 6000)
    assert len(big.model_dump_json(exclude_none=True).encode()) > MAX_RESULT_BYTES
    text = encode_result(big)
    assert len(text.encode()) <= MAX_RESULT_BYTES
    back = TrainResult.model_validate(json.loads(text))
    assert back.artifact == big.artifact and back.reference == big.reference and back.metrics == big.metrics
    assert back.message.endswith("[truncated]")
