"""The chat page's script (widget_static/chat.js) driven by node against a fake DOM, fetch,
WebSocket and timer queue (`chat_script_harness.js`): history then socket with `since`,
de-duplication by seq, streaming bubbles, the outbox resent after a reconnect, the close-code
policy and the "talk to a human" request. The real browser test comes with integration."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "widget_static" / "chat.js"
HARNESS = Path(__file__).with_name("chat_script_harness.js")
NODE = shutil.which("node")
RUN_TIMEOUT_SECS = 30

pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed")


def run(scenario: str) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run([NODE, str(HARNESS), str(SCRIPT), scenario], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_SECS, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_loads_history_then_opens_the_socket_after_the_last_seq() -> None:
    out = run("stream")
    url = urlsplit(out["firstUrl"])
    assert (url.scheme, url.netloc, url.path) == ("wss", "chat.example", "/ws/site/dialogs/7")
    query = parse_qs(url.query)
    assert query["since"] == ["2"] and query["site_token"] == ["tok"]
    assert query["guest_id"] == out["guest"]  # the id kept in localStorage
    assert out["historyTexts"] == ["hi", "<b>hello</b>"]  # drawn as text, not markup
    assert out["welcomeShown"] == 0  # history exists: no welcome bubble
    assert out["accent"] == "#123456" and out["inputEnabled"] is True


def test_live_messages_are_deduplicated_and_kept_in_seq_order() -> None:
    out = run("stream")
    assert out["texts"] == ["hi", "<b>hello</b>", "three", "four", "Hello <i>"]
    assert out["typingShown"] is True


def test_ai_deltas_stream_into_one_bubble_replaced_by_the_final_message() -> None:
    out = run("stream")
    assert out["streaming"] == ["msg msg-assistant msg-streaming|Hello <i>"]
    assert out["afterFinal"] == []  # final text arrived; a late delta is dropped


def test_answers_server_pings() -> None:
    assert run("stream")["sent"] == ['{"type":"pong"}', "__pong__"]


def test_message_is_sent_with_a_client_id_and_resent_after_a_reconnect() -> None:
    out = run("send")
    first = out["firstSend"]
    assert len(first) == 1 and first[0]["type"] == "message" and first[0]["text"] == "hello there"
    assert out["pendingMine"] == ["msg msg-user msg-pending|hello there"]
    assert out["delays"][-1] == 1000  # first backoff step after 1006
    assert out["reconnectSince"] == "2" and out["sentBeforeReady"] == 0
    assert out["resent"] == first  # same client_message_id: idempotent on the server
    assert out["pendingAfterEcho"] == [] and out["texts"][-1] == "hello there"


def test_close_codes_follow_the_reconnect_policy() -> None:
    out = run("close")
    assert 30000 <= out["slowDelay"] <= 60000  # 4008: long backoff
    assert out["replacedDelay"] == 0  # 4009: at once
    assert out["timersAfterFinal"] == 0 and out["inputDisabled"] is True  # 4004: stop
    assert out["status"] == "This conversation is no longer available."
    assert out["sockets"] == 3


def test_talk_to_a_human_posts_a_handoff_request_and_follows_the_events() -> None:
    out = run("handoff")
    url = urlsplit(out["handoffUrl"])
    assert url.path == "/api/dialogs/7/handoff/request"
    assert parse_qs(url.query)["site_token"] == ["tok"]
    body = out["handoffBody"]
    assert body["reason"] == "manual" and len(body["request_id"]) == 36
    assert out["buttonAfterRequest"] == ["Waiting for an operator…", True]
    assert out["buttonActive"] == "<Anna> has joined the chat"
    assert out["managerBubble"] == "Annahi"  # author label + text, both as text
    assert out["buttonReleased"] == ["Talk to a human", False]
