"""WebSocket frames: the one place they are parsed and serialised (orjson).

Server → client frames are plain dicts (the unified envelope of spec §6.5) turned into
JSON text by `encode`. Client → server frames are
parsed by `parse_client_frame` into small frozen dataclasses; anything else raises a
`FrameError` whose code and detail the connection sends back as an `error` frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_FRAME_BYTES: Final = 64 * 1024
MAX_TEXT_CHARS: Final = 10_000
MAX_CLIENT_MESSAGE_ID_CHARS: Final = 64
# RFC 6455 leaves 123 bytes for a close reason; stay strictly below that.
MAX_CLOSE_REASON_BYTES: Final = 122

# Seed-era text heartbeat, still understood (spec §6.8).
LEGACY_PING: Final = "__ping__"
LEGACY_PONG: Final = "__pong__"

# `error` frame codes for frames the server refuses.
BAD_FRAME: Final = "bad_frame"
FRAME_TOO_LARGE: Final = "frame_too_large"

# Shared by every connection: treat as read-only.
PING: Final[dict[str, Any]] = {"type": "ping"}


@dataclass(frozen=True, slots=True)
class SendText:
    """`{"type":"message","text":…,"client_message_id":…}`: post a message to the dialog."""

    text: str
    client_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """`{"type":"typing"}`: the client is typing."""


@dataclass(frozen=True, slots=True)
class Pong:
    """`{"type":"pong"}`: the answer to a server `ping`."""


@dataclass(frozen=True, slots=True)
class LegacyPing:
    """The text frame `__ping__`: answered with `__pong__`."""


@dataclass(frozen=True, slots=True)
class LegacyPong:
    """The text frame `__pong__`."""


ClientFrame = SendText | Typing | Pong | LegacyPing | LegacyPong


class FrameError(Exception):
    """A client frame the server refuses; the connection answers with an `error` frame."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    @property
    def oversized(self) -> bool:
        return self.code == FRAME_TOO_LARGE


def encode(event: Mapping[str, Any]) -> str:
    """JSON text of one server frame."""
    return orjson.dumps(event if isinstance(event, dict) else dict(event)).decode()


def error_frame(code: str, detail: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


def ready_frame(dialog_id: int | None, seq: int | None) -> dict[str, Any]:
    """Sent once the replay is over and live events follow; keys that are unknown are left out
    (the operator feed has neither a dialog nor a seq)."""
    frame: dict[str, Any] = {"type": "ready"}
    if dialog_id is not None:
        frame["dialog_id"] = dialog_id
    if seq is not None:
        frame["seq"] = seq
    return frame


def close_reason(reason: str) -> str:
    """`reason` cut to fit a close frame, on a character boundary."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """One client frame (text or binary) → a `ClientFrame`, or `FrameError`."""
    raw = _checked_bytes(data)
    try:
        text = raw.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise FrameError(BAD_FRAME, "frame is not valid UTF-8") from None
    if text == LEGACY_PING:
        return LegacyPing()
    if text == LEGACY_PONG:
        return LegacyPong()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError(BAD_FRAME, "frame is not valid JSON") from None
    if not isinstance(value, dict):
        raise FrameError(BAD_FRAME, "frame must be a JSON object")
    kind = value.get("type")
    if kind == "message":
        return _send_text(value)
    if kind == "typing":
        return Typing()
    if kind == "pong":
        return Pong()
    # The unknown type is not echoed back: it may be anything up to the frame limit.
    raise FrameError(BAD_FRAME, "unknown frame type")


def _checked_bytes(data: str | bytes) -> bytes:
    """The frame as UTF-8 bytes, refusing it when it is over the size limit."""
    # A character is at least one byte: a long string is refused before encoding it.
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(FRAME_TOO_LARGE, f"frame is over {MAX_FRAME_BYTES} bytes")
    if isinstance(data, bytes):
        return data
    try:
        raw = data.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot come from a valid UTF-8 frame
        raise FrameError(BAD_FRAME, "frame is not valid UTF-8") from None
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameError(FRAME_TOO_LARGE, f"frame is over {MAX_FRAME_BYTES} bytes")
    return raw


def _send_text(value: dict[str, Any]) -> SendText:
    text = value.get("text")
    if not isinstance(text, str):
        raise FrameError(BAD_FRAME, "text must be a string")
    if not text.strip():
        raise FrameError(BAD_FRAME, "text must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise FrameError(BAD_FRAME, f"text is over {MAX_TEXT_CHARS} characters")
    client_message_id = value.get("client_message_id")
    if client_message_id is not None:
        if not isinstance(client_message_id, str):
            raise FrameError(BAD_FRAME, "client_message_id must be a string")
        # An empty id would make every later message of the dialog a "repeat" of the first.
        if not client_message_id or len(client_message_id) > MAX_CLIENT_MESSAGE_ID_CHARS:
            raise FrameError(
                BAD_FRAME,
                f"client_message_id must be 1..{MAX_CLIENT_MESSAGE_ID_CHARS} characters",
            )
    return SendText(text=text, client_message_id=client_message_id)
