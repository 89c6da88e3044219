"""POST /v1/feedback: join a label or reward to the arm that served the request id, and pass it on."""

from __future__ import annotations

import math
from typing import Any

import orjson

from mlsteward_runtime.router.asgi import ClientError, send_json
from mlsteward_runtime.router.feedback import extract_predictions, label_outcome
from mlsteward_runtime.router.proxy import ProxyMixin


class FeedbackMixin(ProxyMixin):
    async def _feedback(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientError(400, "bad_request", "the body is not valid JSON", field="body", rule="JSON") from None
        if not isinstance(doc, dict):
            raise ClientError(422, "invalid_input", "the body must be a JSON object", field="body", rule="object")
        rid = doc.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise ClientError(422, "invalid_input", "request_id must be a non-empty string", field="request_id",
                              rule="required non-empty string")
        has_label, has_reward = "label" in doc, "reward" in doc
        if has_label == has_reward:
            raise ClientError(
                422, "invalid_input", "give exactly one of label and reward",
                field="label" if has_label else "reward", rule="exactly one of label, reward",
            )
        reward = doc.get("reward")
        if has_reward and (isinstance(reward, bool) or not isinstance(reward, (int, float))
                           or not math.isfinite(reward)):
            raise ClientError(422, "invalid_input", "reward must be a finite number", field="reward",
                              rule="finite number")
        served = self.served.get(rid)
        if served is None:
            raise ClientError(404, "not_found", f"no prediction with request_id {rid!r} is remembered",
                              field="request_id", rule="unknown or expired request id")
        if served.feedback:
            raise ClientError(409, "conflict", f"feedback for request_id {rid!r} was already recorded",
                              field="request_id", rule="one feedback per request")
        if has_reward:
            outcome = float(reward)
        else:
            scored = label_outcome(doc["label"], extract_predictions(served.body))
            if scored is None:
                raise ClientError(422, "invalid_input", "the served prediction was not kept, so a label cannot be "
                                  "scored here; send a reward", field="label", rule="served prediction available")
            outcome = scored
        served.feedback = True
        self.stats.arm(served.version).record_outcome(outcome)
        self.metrics.feedback.labels(served.version).inc()
        headers, _, _ = self._forward_headers(scope)
        # The body is known to be JSON by now, whatever the client labelled it; predictors refuse other types.
        headers = [(k, v) for k, v in headers if k != "content-type"] + [("content-type", "application/json")]
        forwarded = await self._call("POST", served.version, served.url + "/v1/feedback", headers, body,
                                     self.state.timeout)
        await send_json(send, 200, {
            "request_id": rid,
            "version": served.version,
            "outcome": outcome,
            "forwarded": forwarded.reason is None and forwarded.status is not None and forwarded.status < 300,
            "backend_status": forwarded.status,
        })
