"""POST /v1/feedback: join a label or reward to the arm that served the request id, and pass it on.

Outcomes nobody can forge or break: the request id is the router's random 128-bit id (see `proxy`); with auth on,
feedback must carry the token the prediction was made with (another valid token gets 403, as if the id belonged
to someone else, which it does); a reward must be a finite number within [reward_min, reward_max] (settings,
default [-1e9, 1e9]), so one value can neither overflow the statistics nor swamp an experiment's mean.
"""

from __future__ import annotations

import hmac
import math
from typing import Any

import orjson

from mlsteward_runtime.router.asgi import ClientError, send_json
from mlsteward_runtime.router.feedback import extract_predictions, label_outcome
from mlsteward_runtime.router.proxy import ProxyMixin


class FeedbackMixin(ProxyMixin):
    async def _feedback(self, scope: dict[str, Any], body: bytes, send: Any, token: bytes | None) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientError(400, "bad_request", "the body is not valid JSON", field="body", rule="JSON") from None
        if not isinstance(doc, dict):
            raise ClientError(422, "invalid_input", "the body must be a JSON object", field="body", rule="object")
        rid = doc.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > 200:
            raise ClientError(422, "invalid_input", "request_id must be a non-empty string of at most 200 "
                              "characters", field="request_id", rule="required string, 1 to 200 characters")
        has_label, has_reward = "label" in doc, "reward" in doc
        if has_label == has_reward:
            raise ClientError(
                422, "invalid_input", "give exactly one of label and reward",
                field="label" if has_label else "reward", rule="exactly one of label, reward",
            )
        reward = self._reward(doc["reward"]) if has_reward else None
        served = self.served.get(rid)
        if served is None:
            raise ClientError(404, "not_found", f"no prediction with request_id {rid!r} is remembered",
                              field="request_id", rule="unknown or expired request id")
        if served.token is not None and (token is None or not hmac.compare_digest(served.token, token)):
            raise ClientError(403, "forbidden", f"request_id {rid!r} was not served to this token",
                              field="request_id", rule="feedback with the token the prediction was made with")
        if served.feedback:
            raise ClientError(409, "conflict", f"feedback for request_id {rid!r} was already recorded",
                              field="request_id", rule="one feedback per request")
        if reward is not None:
            outcome = reward
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

    def _reward(self, reward: Any) -> float:
        lo, hi = self.settings.reward_min, self.settings.reward_max
        rule = f"finite number within [{lo:g}, {hi:g}]"
        if isinstance(reward, bool) or not isinstance(reward, (int, float)):
            raise ClientError(422, "invalid_input", "reward must be a number", field="reward", rule=rule)
        try:
            value = float(reward)
        except OverflowError:
            value = math.inf
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ClientError(422, "invalid_input", f"reward must be a finite number within [{lo:g}, {hi:g}]",
                              field="reward", rule=rule)
        return value
