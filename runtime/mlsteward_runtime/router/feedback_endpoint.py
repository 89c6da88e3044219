"""POST /v1/feedback: join a label or reward to the version that served the request id, and pass it on.

Any replica accepts feedback for any replica's ids when they share the key file (see `ids`): the id is verified
(its mac, under every key of the file, in constant time) and says which version served it, when, to which token,
and, when small, what it predicted. The rules, each a 4xx naming `request_id` (or the field at fault):

- not an id this deployment's router signed (malformed, altered, longer than `ids.MAX_ID_CHARS`, signed by a key
  no longer in the file): 404, as an unknown id;
- issued more than `feedback_window_s` ago (default 24 h): 410; issued more than `ids.MAX_SKEW_S` in the future
  (a replica's clock far off): 422;
- with auth, the token must be the one the prediction was made with (another valid token gets 403, as if the id
  belonged to someone else, which it does); an id issued without auth needs no particular token;
- a label is scored against the prediction carried in the id, else against the response body this replica kept
  (`ServedMap`); with neither, 422 (send a reward);
- a reward must be a finite number within [reward_min, reward_max] (settings, default [-1e9, 1e9]), so one value
  can neither overflow the statistics nor swamp an experiment's mean;
- a label for a request this replica mirrored to a shadow also scores the shadow's answer: a labelled pair (see
  `shadow`; made only here, at the replica that mirrored it, and at most once per request);
- a version no longer in this replica's config is still counted under its name: the operator merges every
  replica's statistics by version, and the id proves the version served the prediction. It is not forwarded (no
  backend of that version is known here).

Duplicates: an outcome is counted at most once per request id per replica within the window. Each replica
remembers the ids it counted (`CountedIds`, bounded by feedback_counted_capacity and feedback_counted_max_bytes)
and answers a repeat with 409. Nothing is shared between replicas, so feedback for one id sent to several replicas
is counted once on each; and when a replica's memory is full it forgets the id counted longest ago (counted in
mlsteward_router_feedback_counted_evictions), after which a repeat of that id within the window is counted again.

The feedback is forwarded to a backend of the version that served it, best effort, with `request_id` replaced by
the nonce (the id the predictor was sent and keys its own feedback by); the answer says whether that worked.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from mlsteward_runtime.router.asgi import ClientError, send_json
from mlsteward_runtime.router.feedback import CountedIds, extract_predictions, label_outcome
from mlsteward_runtime.router.ids import MAX_ID_CHARS, MAX_SKEW_S, IdKeys, InvalidId, IssuedId, verify
from mlsteward_runtime.router.proxy import ProxyMixin


class FeedbackMixin(ProxyMixin):
    def _feedback_memory(self) -> None:
        """What feedback needs besides the ServedMap: the keys and the ids already counted (called at startup)."""
        s = self.settings
        self.ids = IdKeys(s.id_key_file, s.reload_interval_s)
        self.ids.reloads = self._keys_reloaded
        self.metrics.id_keys.set(len(self.ids.keys))
        self.counted = CountedIds(s.feedback_counted_capacity, s.feedback_counted_max_bytes,
                                  self.metrics.counted_evictions.inc)
        self._shadow_memory()

    def _keys_reloaded(self, result: str) -> None:
        self.metrics.id_key_reloads.labels(result).inc()
        self.metrics.id_keys.set(len(self.ids.keys))

    def _refuse_feedback(self, reason: str, status: int, error: str, message: str, rule: str) -> ClientError:
        self.metrics.feedback_refused.labels(reason).inc()
        return ClientError(status, error, message, field="request_id", rule=rule)

    def _issued(self, rid: str, token: bytes | None) -> IssuedId:
        """The verified id, or the 4xx it gets."""
        try:
            issued = verify(self.ids.current(), rid)
        except InvalidId as exc:
            raise self._refuse_feedback(
                "invalid_id", 404, "not_found", f"request_id is not a prediction this deployment served ({exc})",
                "a request id the router returned for a served prediction",
            ) from None
        now = time.time()
        window = self.settings.feedback_window_s
        if issued.issued < now - window:
            raise self._refuse_feedback(
                "expired", 410, "gone", f"request_id was issued {now - issued.issued:.0f} s ago; feedback is "
                f"accepted for {window:g} s", f"feedback within feedback_window_s={window:g} of the prediction",
            )
        if issued.issued > now + MAX_SKEW_S:
            raise self._refuse_feedback(
                "future", 422, "invalid_input", f"request_id was issued {issued.issued - now:.0f} s in the future",
                f"issued at most {MAX_SKEW_S} s ahead of this replica's clock",
            )
        if not issued.token_matches(token):
            raise self._refuse_feedback(
                "token", 403, "forbidden", f"request_id {rid!r} was not served to this token",
                "feedback with the token the prediction was made with",
            )
        return issued

    async def _feedback(self, scope: dict[str, Any], body: bytes, send: Any, token: bytes | None) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ClientError(400, "bad_request", "the body is not valid JSON", field="body", rule="JSON") from None
        if not isinstance(doc, dict):
            raise ClientError(422, "invalid_input", "the body must be a JSON object", field="body", rule="object")
        rid = doc.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
            raise ClientError(422, "invalid_input", f"request_id must be a non-empty string of at most "
                              f"{MAX_ID_CHARS} characters", field="request_id",
                              rule=f"required string, 1 to {MAX_ID_CHARS} characters")
        has_label, has_reward = "label" in doc, "reward" in doc
        if has_label == has_reward:
            raise ClientError(
                422, "invalid_input", "give exactly one of label and reward",
                field="label" if has_label else "reward", rule="exactly one of label, reward",
            )
        reward = self._reward(doc["reward"]) if has_reward else None
        issued = self._issued(rid, token)
        if issued.nonce in self.counted:
            raise self._refuse_feedback("duplicate", 409, "conflict",
                                        f"feedback for request_id {rid!r} was already recorded",
                                        "one feedback per request")
        served = self.served.get(issued.nonce)
        predictions: list[Any] | None = None
        if reward is not None:
            outcome = reward
        else:
            predictions = issued.predictions
            if predictions is None and served is not None:
                predictions = extract_predictions(served.body)
            scored = label_outcome(doc["label"], predictions)
            if scored is None:
                raise ClientError(422, "invalid_input", "the served prediction was not kept, so a label cannot be "
                                  "scored here; send a reward", field="label", rule="served prediction available")
            outcome = scored
        self.counted.add(issued.nonce, issued.issued, time.time() - self.settings.feedback_window_s)
        self.metrics.counted_ids.set(len(self.counted))
        version = issued.version
        self.stats.arm(version).record_outcome(outcome)
        self._pair(issued.nonce, doc.get("label"), reward is None, predictions)
        self.outcome_at = time.monotonic()
        self.metrics.feedback.labels(version).inc()
        state = self.state
        url = state.urls[state.versions.index(version)] if version in state.versions else \
            served.url if served is not None else None
        status: int | None = None
        forwarded = False
        if url is not None:
            headers, _, _ = self._forward_headers(scope)
            # The body is known to be JSON by now, whatever the client labelled it; predictors refuse other types.
            headers = [(k, v) for k, v in headers if k != "content-type"] + [("content-type", "application/json")]
            out = orjson.dumps({**doc, "request_id": issued.nonce})
            attempt = await self._call("POST", version, url + "/v1/feedback", headers, out, state.timeout)
            status = attempt.status
            forwarded = attempt.reason is None and status is not None and status < 300
        await send_json(send, 200, {
            "request_id": rid,
            "version": version,
            "outcome": outcome,
            "forwarded": forwarded,
            "backend_status": status,
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
