"""The landing chat with an OpenAI-compatible server (the fake, over a real socket)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from fakes.fixtures import fake_openai  # noqa: F401
from fakes.openai_server import FakeOpenAI, fail, reply

SESSION = "visitor-session-0002"


@pytest.fixture
def settings_env(fake_openai: FakeOpenAI, redis_url: str | None) -> dict[str, str]:  # noqa: F811
    env = {"OPENAI_API_KEY": "sk-landing", "OPENAI_BASE_URL": fake_openai.base_url}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def test_model_json_reply_becomes_message_and_buttons(client: TestClient,
                                                       fake_openai: FakeOpenAI) -> None:  # noqa: F811
    answer = {"message": "We integrate with Telegram.",
              "buttons": [{"label": "Start free", "url": "/register"}, {"bogus": 1}]}
    fake_openai.enqueue(reply(json.dumps(answer)))
    response = client.post("/api/ai/chat", json={"session_id": SESSION, "message": "Telegram?"})
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "We integrate with Telegram."
    assert response.json()["buttons"] == [{"label": "Start free", "url": "/register"}]
    sent = fake_openai.requests[-1]
    assert sent.model == "gpt-4o-mini" and sent.key == "sk-landing"
    assert sent.messages[0]["role"] == "system"
    assert sent.messages[-1] == {"role": "user", "content": "Telegram?"}


def test_history_of_the_session_is_sent_to_the_model(client: TestClient,
                                                     fake_openai: FakeOpenAI) -> None:  # noqa: F811
    fake_openai.enqueue(reply("first answer"), reply("second answer"))
    client.post("/api/ai/chat", json={"session_id": SESSION, "message": "one"})
    second = client.post("/api/ai/chat", json={"session_id": SESSION, "message": "two"})
    assert second.json()["message"] == "second answer"
    assert second.json()["buttons"] is None
    roles = [(m["role"], m["content"]) for m in fake_openai.requests[-1].messages[1:]]
    assert roles == [("user", "one"), ("assistant", "first answer"), ("user", "two")]


def test_llm_failure_falls_back_to_canned_answers(client: TestClient,
                                                   fake_openai: FakeOpenAI) -> None:  # noqa: F811
    fake_openai.script("sk-landing", fail(500))
    response = client.post("/api/ai/chat", json={"session_id": SESSION, "message": "price?"})
    assert response.status_code == 200
    assert response.json()["source"] == "fallback"
    assert "balance" in response.json()["message"]
