"""WebSocket frames: every rule of `server/ws/protocol.py`, plus the pure helpers beside it."""

from __future__ import annotations

import random

import orjson
import pytest

from server.ws.connection import Heartbeat
from server.ws.limits import ConnectionLimits, LimitExceeded
from server.ws.protocol import (
    BAD_FRAME,
    FRAME_TOO_LARGE,
    MAX_CLIENT_MESSAGE_ID_CHARS,
    MAX_CLOSE_REASON_BYTES,
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    PING,
    FrameError,
    LegacyPing,
    LegacyPong,
    Pong,
    SendText,
    Typing,
    close_reason,
    encode,
    error_frame,
    parse_client_frame,
    ready_frame,
)


def message_frame(**fields: object) -> str:
    return orjson.dumps({"type": "message", **fields}).decode()


def refused(data: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(data)
    return caught.value


# --- accepted frames -------------------------------------------------------------------------


def test_message_frame_becomes_send_text_with_its_client_message_id() -> None:
    frame = parse_client_frame(message_frame(text="Hello", client_message_id="c-1"))
    assert frame == SendText(text="Hello", client_message_id="c-1")


def test_message_frame_without_client_message_id_has_none() -> None:
    assert parse_client_frame(message_frame(text="Hi")) == SendText(text="Hi")
    assert parse_client_frame(message_frame(text="Hi", client_message_id=None)) == SendText("Hi")


def test_message_text_keeps_its_characters_and_ignores_unknown_fields() -> None:
    frame = parse_client_frame(message_frame(text="  привет 👋 ", extra={"x": 1}))
    assert frame == SendText(text="  привет 👋 ")


def test_typing_and_pong_frames() -> None:
    assert parse_client_frame('{"type":"typing"}') == Typing()
    assert parse_client_frame('{"type":"pong"}') == Pong()


def test_legacy_text_heartbeats() -> None:
    assert parse_client_frame("__ping__") == LegacyPing()
    assert parse_client_frame("__pong__") == LegacyPong()
    assert parse_client_frame(b"__ping__") == LegacyPing()


def test_binary_frame_with_a_json_object_is_parsed_like_text() -> None:
    assert parse_client_frame(message_frame(text="bin").encode()) == SendText(text="bin")


def test_text_at_the_limits_is_accepted() -> None:
    longest = "я" * MAX_TEXT_CHARS  # characters, not bytes, are counted
    assert parse_client_frame(message_frame(text=longest)) == SendText(text=longest)
    client_id = "c" * MAX_CLIENT_MESSAGE_ID_CHARS
    frame = parse_client_frame(message_frame(text="x", client_message_id=client_id))
    assert frame == SendText(text="x", client_message_id=client_id)


def test_frame_of_exactly_the_size_limit_is_accepted() -> None:
    frame = '{"type":"typing","pad":"' + "p" * (MAX_FRAME_BYTES - 26) + '"}'
    assert len(frame.encode()) == MAX_FRAME_BYTES
    assert parse_client_frame(frame) == Typing()


# --- refused frames ----------------------------------------------------------------------------


def test_frame_over_the_size_limit_is_refused_as_too_large() -> None:
    frame = '{"type":"typing","pad":"' + "p" * (MAX_FRAME_BYTES - 25) + '"}'
    assert len(frame.encode()) == MAX_FRAME_BYTES + 1
    error = refused(frame)
    assert error.code == FRAME_TOO_LARGE and error.oversized
    assert refused(frame.encode()).code == FRAME_TOO_LARGE


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    # 40,000 characters are under the limit, but as UTF-8 they take 80,000 bytes.
    frame = message_frame(text="я" * 40_000)
    assert len(frame) < MAX_FRAME_BYTES < len(frame.encode())
    assert refused(frame).code == FRAME_TOO_LARGE


def test_binary_frame_that_is_not_utf8_is_refused() -> None:
    error = refused(b'{"type":"message","text":"\xff\xfe"}')
    assert (error.code, error.detail) == (BAD_FRAME, "frame is not valid UTF-8")
    assert not error.oversized


def test_text_with_a_lone_surrogate_is_refused_as_not_utf8() -> None:
    assert refused('{"type":"message","text":"\ud800"}').detail == "frame is not valid UTF-8"


@pytest.mark.parametrize("data", ["", "hello", "{", '{"type":"typing"', "__PING__", "NaN"])
def test_frame_that_is_not_json_is_refused(data: str) -> None:
    error = refused(data)
    assert (error.code, error.detail) == (BAD_FRAME, "frame is not valid JSON")


@pytest.mark.parametrize("data", ["[]", '["message"]', '"message"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_refused(data: str) -> None:
    error = refused(data)
    assert (error.code, error.detail) == (BAD_FRAME, "frame must be a JSON object")


@pytest.mark.parametrize(
    "data", ["{}", '{"type":"ping"}', '{"type":"Message"}', '{"type":1}', '{"text":"hi"}']
)
def test_unknown_frame_type_is_refused(data: str) -> None:
    error = refused(data)
    assert (error.code, error.detail) == (BAD_FRAME, "unknown frame type")


def test_unknown_type_is_not_echoed_back() -> None:
    assert "secret-type" not in refused('{"type":"secret-type"}').detail


@pytest.mark.parametrize("text", [None, 5, ["a"], {"a": 1}, True])
def test_message_text_that_is_not_a_string_is_refused(text: object) -> None:
    data = '{"type":"message"}' if text is None else message_frame(text=text)
    assert refused(data).detail == "text must be a string"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_message_text_is_refused(text: str) -> None:
    assert refused(message_frame(text=text)).detail == "text must not be empty"


def test_message_text_over_the_limit_is_refused() -> None:
    error = refused(message_frame(text="a" * (MAX_TEXT_CHARS + 1)))
    assert (error.code, error.detail) == (BAD_FRAME, f"text is over {MAX_TEXT_CHARS} characters")


@pytest.mark.parametrize("client_id", [7, 1.5, ["c"], {"id": "c"}, False])
def test_client_message_id_that_is_not_a_string_is_refused(client_id: object) -> None:
    error = refused(message_frame(text="x", client_message_id=client_id))
    assert error.detail == "client_message_id must be a string"


@pytest.mark.parametrize("client_id", ["", "c" * (MAX_CLIENT_MESSAGE_ID_CHARS + 1)])
def test_client_message_id_empty_or_too_long_is_refused(client_id: str) -> None:
    error = refused(message_frame(text="x", client_message_id=client_id))
    assert error.code == BAD_FRAME
    assert error.detail.startswith("client_message_id must be 1..")


# --- server frames -----------------------------------------------------------------------------


def test_encode_gives_compact_json_text() -> None:
    event = {"type": "message:new", "dialog_id": 3, "seq": 2, "message": {"text": "é"}}
    text = encode(event)
    assert isinstance(text, str)
    assert text == '{"type":"message:new","dialog_id":3,"seq":2,"message":{"text":"é"}}'


def test_encode_accepts_any_mapping() -> None:
    from types import MappingProxyType

    assert encode(MappingProxyType({"type": "ping"})) == '{"type":"ping"}'


def test_encode_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        encode({"type": "x", "value": object()})


def test_ping_error_and_ready_frames() -> None:
    assert encode(PING) == '{"type":"ping"}'
    assert error_frame("bad_frame", "nope") == {"type": "error", "code": "bad_frame",
                                                "detail": "nope"}
    assert ready_frame(7, 12) == {"type": "ready", "dialog_id": 7, "seq": 12}
    assert ready_frame(7, None) == {"type": "ready", "dialog_id": 7}
    assert ready_frame(None, None) == {"type": "ready"}


def test_close_reason_is_cut_below_123_bytes_on_a_character_boundary() -> None:
    assert close_reason("slow consumer") == "slow consumer"
    cut = close_reason("ж" * 100)  # 200 bytes
    assert len(cut.encode()) <= MAX_CLOSE_REASON_BYTES < 123
    assert cut == "ж" * (MAX_CLOSE_REASON_BYTES // 2)
    assert close_reason("a" * 500) == "a" * MAX_CLOSE_REASON_BYTES


# --- heartbeat timing and connection limits (pure) ---------------------------------------------


def test_heartbeat_delay_stays_within_the_jitter() -> None:
    heartbeat = Heartbeat()
    rng = random.Random(4)
    delays = [heartbeat.next_delay(rng) for _ in range(2000)]
    assert all(20.0 <= delay <= 30.0 for delay in delays)
    assert min(delays) < 21.0 and max(delays) > 29.0  # spread, not one fixed interval


def test_limits_count_per_dialog_and_per_process() -> None:
    limits = ConnectionLimits(per_dialog=2, per_process=3)
    limits.acquire(1)
    limits.acquire(1)
    with pytest.raises(LimitExceeded) as caught:
        limits.acquire(1)
    assert caught.value.reason == "too many connections to this dialog"
    limits.acquire(2)
    assert (limits.total, limits.count(1), limits.count(2)) == (3, 2, 1)
    with pytest.raises(LimitExceeded) as caught:
        limits.acquire(None)
    assert caught.value.reason == "too many connections"
    limits.release(1)
    limits.acquire(None)  # the operator feed counts toward the process limit only
    assert (limits.total, limits.count(1)) == (3, 1)


def test_limits_release_frees_the_slot_and_forgets_empty_dialogs() -> None:
    limits = ConnectionLimits(per_dialog=1, per_process=10)
    limits.acquire(5)
    limits.release(5)
    assert limits.count(5) == 0 and limits.total == 0 and limits._per_dialog == {}
    limits.acquire(5)
    with pytest.raises(RuntimeError):
        ConnectionLimits().release(None)


async def test_limit_slot_is_released_when_the_block_fails() -> None:
    limits = ConnectionLimits(per_dialog=1, per_process=1)
    with pytest.raises(ValueError):
        async with limits.slot(9):
            assert limits.total == 1
            raise ValueError("door failed")
    assert limits.total == 0
    async with limits.slot(None):
        with pytest.raises(LimitExceeded):
            async with limits.slot(9):
                pass
    assert limits.total == 0
