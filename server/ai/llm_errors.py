"""What can go wrong when calling an LLM, in the two shapes the engine needs.

The engine sees typed errors (`NoKeyAvailable`, `LlmFailed`, `LlmCancelled`). Inside the
gateway, `classify()` turns an SDK or transport exception into a `Failure` that says whether the
next key may be tried and what the failing key deserves (a counted error, a rest).
"""

from __future__ import annotations

import dataclasses
import json

import openai


class LlmError(Exception):
    """Base of every error the LLM layer raises to the engine."""


class NoKeyAvailable(LlmError):
    """No key may serve this model now (none configured, all rested, or all at their limits)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"no AI key available for model {model!r}")
        self.model = model


class LlmFailed(LlmError):
    """Every key tried failed, or the answer broke after part of it was already delivered."""

    def __init__(self, reason: str, *, partial_text: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial_text = partial_text


class LlmCancelled(LlmError):
    """A non-streaming call was cancelled through its `CancelToken`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    failover: bool  # another key may succeed where this one failed
    key_fault: bool  # counts as a consecutive error of the key
    rest: bool  # rest the key at once (refused credentials, rate limited)


# Statuses after which another key (or provider behind another base URL) may do better.
_KEY_STATUSES = {401, 403, 404, 408, 409, 429}
_REST_STATUSES = {401, 403, 429}


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        reason = f"HTTP {status}: {_short(exc.message)}"
        if status in _KEY_STATUSES or status >= 500:
            return Failure(reason, failover=True, key_fault=True, rest=status in _REST_STATUSES)
        # 400/422: the request itself is wrong; no key will accept it.
        return Failure(reason, failover=False, key_fault=False, rest=False)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return Failure("timed out", failover=True, key_fault=True, rest=False)
    if isinstance(exc, openai.APIConnectionError):
        return Failure(f"connection failed: {_short(str(exc))}", failover=True, key_fault=True,
                       rest=False)
    if isinstance(exc, json.JSONDecodeError | ValueError | openai.APIError):
        return Failure(f"malformed response: {_short(str(exc))}", failover=True, key_fault=True,
                       rest=False)
    return Failure(f"{type(exc).__name__}: {_short(str(exc))}", failover=True, key_fault=True,
                   rest=False)


# What `classify` understands; anything else is a bug and propagates.
HANDLED_ERRORS: tuple[type[BaseException], ...] = (openai.OpenAIError, TimeoutError, ValueError)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
