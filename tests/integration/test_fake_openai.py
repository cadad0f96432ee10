"""The fake OpenAI-compatible server itself, through the real openai SDK over its socket."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from fakes.openai_server import FakeOpenAI, embed_text, fail, reply, split_text
from openai.types.chat import ChatCompletionMessageParam

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _client(fake: FakeOpenAI, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=fake.base_url, max_retries=0, timeout=10)


def test_split_text_joins_back_to_the_text() -> None:
    assert split_text("abcdefg", 3) == ["abc", "def", "g"]
    assert split_text("ab", 5) == ["a", "b"]
    assert split_text("", 3) == [""]


def test_embed_text_is_deterministic_and_normalised() -> None:
    vector = embed_text("Refund policy, refund window", 32)
    assert vector == embed_text("refund POLICY refund window", 32)
    assert sum(value * value for value in vector) == pytest.approx(1.0)
    assert embed_text("", 8) == [0.0] * 8


def test_plain_completion_with_usage(fake_llm: FakeOpenAI) -> None:
    fake_llm.script("sk-test", reply("Plain.", prompt_tokens=5, completion_tokens=2))
    with _client(fake_llm) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "Plain."
    assert answer.usage is not None and answer.usage.total_tokens == 7


def test_stream_sends_chunks_then_usage(fake_llm: FakeOpenAI) -> None:
    fake_llm.script("sk-test", reply("one two three", chunks=3))
    with _client(fake_llm) as client:
        chunks = list(client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True},
        ))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    deltas = [delta for delta in deltas if delta]
    assert deltas == split_text("one two three", 3)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    [request] = fake_llm.requests
    assert request.completed and not request.disconnected


def test_queued_behaviour_wins_over_the_scripted_one_once(
    fake_llm: FakeOpenAI,
) -> None:
    fake_llm.script("sk-test", reply("scripted"))
    fake_llm.enqueue(fail(429))
    with _client(fake_llm) as client:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=MESSAGES)
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "scripted"
    assert fake_llm.keys_called() == ["sk-test", "sk-test"]


def test_embeddings_in_float_format(fake_llm: FakeOpenAI) -> None:
    with _client(fake_llm) as client:
        result = client.embeddings.create(model="e", input=["a b", "c"], encoding_format="float",
                                          dimensions=16)
    assert [item.embedding for item in result.data] == [embed_text("a b", 16),
                                                        embed_text("c", 16)]
