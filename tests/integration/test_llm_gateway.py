"""The LLM gateway through the real openai SDK over the fake server's socket, on both databases.

Keys, limits and fail-over (spec §9.6), streaming order, cancellation mid-stream, timeouts, the
`OPENAI_API_KEY` fallback and embeddings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI, embed_text, fail, hang, malformed, reply, split_text

from server.ai.cancel import CancelToken
from server.ai.chat_stream import ChatStream
from server.ai.llm import LlmGateway
from server.ai.llm_errors import LlmCancelled, LlmFailed, NoKeyAvailable
from server.context import Services
from server.store import ai_keys, ai_usage
from server.store.ai_keys import AiKeyRecord
from server.store.ai_usage import UsageRow
from server.store.types import utcnow
from server.store.users import UserRecord

MODEL = "gpt-4o-mini"
QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there?"}]
SHORT_TIMEOUT_SECS = 1.0
LONG_TIMEOUT_SECS = 30.0
WAIT_SECS = 10.0


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def gateway(services: Services) -> AsyncIterator[LlmGateway]:
    async with LlmGateway(services.settings, services.db, timeout_secs=LONG_TIMEOUT_SECS,
                          first_chunk_timeout_secs=LONG_TIMEOUT_SECS) as built:
        yield built


@pytest.fixture
def add_key(services: Services, fake_llm: FakeOpenAI) -> Callable[..., AiKeyRecord]:
    def add(token: str, **fields: Any) -> AiKeyRecord:
        values: dict[str, Any] = {"name": token, "token": token, "model_access": MODEL,
                                  "base_url": fake_llm.base_url}
        values.update(fields)
        with services.db.write() as session:
            return ai_keys.create_key(session, **values)

    return add


def _key(services: Services, key_id: int) -> AiKeyRecord:
    with services.db.read() as session:
        record = ai_keys.get_key(session, key_id)
    assert record is not None
    return record


async def _usage(services: Services, gateway: LlmGateway) -> list[UsageRow]:
    """The usage rows, once the gateway's background writer has committed what it holds."""
    assert await gateway.flush_usage()
    with services.db.read() as session:
        return ai_usage.recent_usage(session)


async def _collect(stream: ChatStream) -> list[str]:
    async with stream:
        return [delta async for delta in stream]


async def _ask(gateway: LlmGateway, **kwargs: Any) -> ChatStream:
    stream = gateway.stream_chat(QUESTION, model=kwargs.pop("model", MODEL), **kwargs)
    await _collect(stream)
    return stream


# --- streaming ----------------------------------------------------------------------------------


async def test_stream_yields_deltas_in_order_and_joins_to_the_text(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord], fake_llm: FakeOpenAI,
) -> None:
    key = add_key("sk-a")
    text = "The quick brown fox jumps over the lazy dog."
    fake_llm.script("sk-a", reply(text, chunks=6))
    stream = gateway.stream_chat(QUESTION, model=MODEL)
    deltas = await _collect(stream)
    assert deltas == split_text(text, 6)
    assert stream.text == text
    assert (stream.outcome, stream.token_id, stream.attempts) == ("completed", key.id, 1)
    sent = fake_llm.requests[0]
    assert (sent.key, sent.model, sent.messages, sent.stream) == ("sk-a", MODEL, QUESTION, True)


async def test_usage_row_carries_key_id_and_server_token_counts(
    gateway: LlmGateway, services: Services, user: UserRecord,
    add_key: Callable[..., AiKeyRecord], fake_llm: FakeOpenAI,
) -> None:
    key = add_key("sk-a")
    fake_llm.script("sk-a", reply("Fine.", prompt_tokens=11, completion_tokens=7))
    stream = await _ask(gateway, user_id=user.id)
    assert stream.usage is not None and stream.usage.total_tokens == 18
    [row] = await _usage(services, gateway)
    assert (row.token_id, row.user_id, row.model_used, row.request_type) == (
        key.id, user.id, MODEL, "chat")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (11, 7, 18)
    assert row.success is True and row.error_message is None and row.provider == "openai"
    assert row.response_time is not None


async def test_tokens_are_estimated_when_the_server_sends_no_usage(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", reply("x" * 40, send_usage=False))
    stream = await _ask(gateway)
    assert stream.usage is not None and stream.usage.estimated
    [row] = await _usage(services, gateway)
    assert row.completion_tokens == 10
    assert row.prompt_tokens == (len("Be brief.") + 3) // 4 + (len("Hi there?") + 3) // 4


async def test_counters_increment_once_per_call(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
) -> None:
    key = add_key("sk-a")
    await _ask(gateway)
    record = _key(services, key.id)
    assert (record.daily_usage, record.monthly_usage) == (1, 1)
    await _ask(gateway)
    assert _key(services, key.id).daily_usage == 2


# --- fail-over ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_failing_key_fails_over_to_the_next(
    status: int, gateway: LlmGateway, services: Services,
    add_key: Callable[..., AiKeyRecord], fake_llm: FakeOpenAI,
) -> None:
    first = add_key("sk-first", priority=1)
    second = add_key("sk-second", priority=2)
    fake_llm.script("sk-first", fail(status))
    fake_llm.script("sk-second", reply("From the second key."))
    stream = await _ask(gateway)
    assert stream.text == "From the second key."
    assert stream.token_id == second.id and stream.attempts == 2
    assert fake_llm.keys_called() == ["sk-first", "sk-second"]
    failed = _key(services, first.id)
    assert failed.error_count == 1 and str(status) in (failed.last_error or "")
    assert (failed.rested_until is not None) == (status in (401, 429))
    assert (failed.daily_usage, _key(services, second.id).daily_usage) == (1, 1)
    rows = await _usage(services, gateway)
    assert [(r.token_id, r.success) for r in rows] == [(first.id, False), (second.id, True)]


@pytest.mark.parametrize("status", [401, 429])
async def test_key_refused_with_401_or_429_is_skipped_next_time(
    status: int, gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-first", priority=1)
    add_key("sk-second", priority=2)
    fake_llm.enqueue(fail(status), key="sk-first")
    await _ask(gateway)
    await _ask(gateway)
    assert fake_llm.keys_called() == ["sk-first", "sk-second", "sk-second"]


async def test_three_consecutive_errors_rest_a_key(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    flaky = add_key("sk-flaky", priority=1)
    add_key("sk-steady", priority=2)
    fake_llm.script("sk-flaky", fail(500))
    for _ in range(4):
        await _ask(gateway)
    assert fake_llm.keys_called().count("sk-flaky") == 3
    assert fake_llm.keys_called()[-1:] == ["sk-steady"]
    record = _key(services, flaky.id)
    assert record.error_count == 3 and record.rested_until is not None


async def test_success_resets_the_error_streak(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    key = add_key("sk-a")
    add_key("sk-b", priority=2)
    fake_llm.enqueue(fail(500), key="sk-a")
    await _ask(gateway)
    assert _key(services, key.id).error_count == 1
    await _ask(gateway)
    assert _key(services, key.id).error_count == 0


@pytest.mark.parametrize(
    "behaviour", [hang(), hang(after_chunks=0)], ids=["no-headers", "no-chunk"]
)
async def test_hanging_key_times_out_and_fails_over(
    behaviour: Any, gateway: LlmGateway, services: Services,
    add_key: Callable[..., AiKeyRecord], fake_llm: FakeOpenAI,
) -> None:
    slow = add_key("sk-slow", priority=1)
    add_key("sk-fast", priority=2)
    fake_llm.script("sk-slow", behaviour)
    stream = await _ask(gateway, first_chunk_timeout_secs=SHORT_TIMEOUT_SECS)
    assert stream.text == "Hello from the fake model."
    assert fake_llm.keys_called() == ["sk-slow", "sk-fast"]
    assert _key(services, slow.id).last_error == "timed out"


async def test_malformed_chunk_before_any_text_fails_over(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    broken = add_key("sk-broken", priority=1)
    add_key("sk-good", priority=2)
    fake_llm.script("sk-broken", malformed(at=0))
    fake_llm.script("sk-good", reply("Clean answer."))
    stream = await _ask(gateway)
    assert stream.text == "Clean answer."
    assert "malformed" in (_key(services, broken.id).last_error or "")


async def test_failure_after_text_ends_the_answer_without_restarting(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    first = add_key("sk-first", priority=1)
    add_key("sk-second", priority=2)
    text = "one two three four"
    fake_llm.script("sk-first", malformed(at=2, text=text, chunks=4))
    stream = gateway.stream_chat(QUESTION, model=MODEL)
    received: list[str] = []
    with pytest.raises(LlmFailed) as caught:
        async with stream:
            async for delta in stream:
                received.append(delta)
    assert received == split_text(text, 4)[:2]
    assert caught.value.partial_text == "".join(received)
    assert stream.outcome == "failed"
    assert fake_llm.keys_called() == ["sk-first"]
    [row] = await _usage(services, gateway)
    assert row.token_id == first.id and row.success is False


async def test_stall_after_text_times_out_as_failure(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", hang(after_chunks=1))
    stream = gateway.stream_chat(QUESTION, model=MODEL, timeout_secs=SHORT_TIMEOUT_SECS * 2)
    with pytest.raises(LlmFailed, match="timed out"):
        await _collect(stream)
    assert stream.text == split_text("Hello from the fake model.", 3)[0]


async def test_bad_request_is_not_retried_on_other_keys(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    first = add_key("sk-first", priority=1)
    add_key("sk-second", priority=2)
    fake_llm.script("sk-first", fail(400, "bad messages"))
    with pytest.raises(LlmFailed, match="400"):
        await _ask(gateway)
    assert fake_llm.keys_called() == ["sk-first"]
    record = _key(services, first.id)
    assert record.error_count == 0 and record.rested_until is None


async def test_every_key_failing_raises_llm_failed(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    add_key("sk-b")
    fake_llm.default = fail(503)
    with pytest.raises(LlmFailed, match="503"):
        await _ask(gateway)
    assert sorted(str(key) for key in fake_llm.keys_called()) == ["sk-a", "sk-b"]


# --- limits and the allow-list ----------------------------------------------------------------


async def test_daily_limit_moves_calls_to_the_next_key_then_none(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-small", priority=1, daily_limit=2)
    add_key("sk-spare", priority=2, daily_limit=1)
    for _ in range(3):
        await _ask(gateway)
    assert fake_llm.keys_called() == ["sk-small", "sk-small", "sk-spare"]
    with pytest.raises(NoKeyAvailable):
        await _ask(gateway)
    assert len(fake_llm.requests) == 3


async def test_daily_limit_resets_lazily_the_next_day(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
) -> None:
    key = add_key("sk-a", daily_limit=1)
    await _ask(gateway)
    with pytest.raises(NoKeyAvailable):
        await _ask(gateway)
    with services.db.write() as session:
        ai_keys.update_key(session, key.id, last_reset_daily=utcnow() - dt.timedelta(days=1))
    stream = await _ask(gateway)
    assert stream.token_id == key.id
    assert _key(services, key.id).daily_usage == 1


async def test_model_allow_list_is_respected(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-big", priority=1, model_access="gpt-4o")
    add_key("sk-mini", priority=2, model_access="gpt-4o-mini")
    await _ask(gateway, model="gpt-4o-mini")
    await _ask(gateway, model="gpt-4o")
    assert fake_llm.keys_called() == ["sk-mini", "sk-big"]
    with pytest.raises(NoKeyAvailable):
        await _ask(gateway, model="gpt-4")


# --- cancellation -------------------------------------------------------------------------------


async def test_cancel_mid_stream_stops_deltas_and_closes_the_connection(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    key = add_key("sk-a")
    fake_llm.script("sk-a", hang(after_chunks=1))  # one delta, then silence
    token = CancelToken()
    stream = gateway.stream_chat(QUESTION, model=MODEL, cancel=token)
    received: list[str] = []
    async with stream:
        async for delta in stream:
            received.append(delta)
            # A takeover decided in another thread while the server is silent.
            threading.Thread(target=token.cancel, args=("takeover",)).start()
    assert received == split_text("Hello from the fake model.", 3)[:1]
    assert stream.outcome == "cancelled" and stream.text == received[0]
    assert fake_llm.wait_until(lambda: fake_llm.requests[0].disconnected, WAIT_SECS)
    [row] = await _usage(services, gateway)
    assert (row.token_id, row.success, row.error_message) == (key.id, False, "cancelled")
    assert row.completion_tokens >= 1
    assert _key(services, key.id).error_count == 0


async def test_no_text_is_yielded_after_cancel(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", reply("a b c d e f g h", chunks=8))
    token = CancelToken()
    stream = gateway.stream_chat(QUESTION, model=MODEL, cancel=token)
    received: list[str] = []
    async with stream:
        async for delta in stream:
            received.append(delta)
            token.cancel()
    assert len(received) == 1
    assert stream.cancelled


async def test_cancel_before_start_sends_nothing(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    key = add_key("sk-a")
    token = CancelToken()
    token.cancel()
    stream = await _ask(gateway, cancel=token)
    assert stream.cancelled and stream.text == ""
    assert fake_llm.requests == [] and await _usage(services, gateway) == []
    assert _key(services, key.id).daily_usage == 0


async def test_consumer_leaving_early_records_a_cancelled_attempt(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", hang(after_chunks=1))
    stream = gateway.stream_chat(QUESTION, model=MODEL)
    async with stream:
        async for _delta in stream:
            break
    assert stream.cancelled
    assert fake_llm.wait_until(lambda: fake_llm.requests[0].disconnected, WAIT_SECS)
    assert [row.error_message for row in await _usage(services, gateway)] == ["cancelled"]


async def test_cancelling_the_consuming_task_records_the_attempt(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", hang(after_chunks=1))
    first_delta = asyncio.Event()

    async def consume() -> None:
        async with gateway.stream_chat(QUESTION, model=MODEL) as stream:
            async for _delta in stream:
                first_delta.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(first_delta.wait(), WAIT_SECS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_llm.wait_until(lambda: fake_llm.requests[0].disconnected, WAIT_SECS)
    assert [row.error_message for row in await _usage(services, gateway)] == ["cancelled"]


# --- the OPENAI_API_KEY fallback and has_any_key ---------------------------------------------


async def test_env_key_is_used_when_the_pool_is_empty(
    services: Services, fake_llm: FakeOpenAI,
) -> None:
    settings = dataclasses.replace(services.settings, openai_api_key="sk-env",
                                   openai_base_url=fake_llm.base_url)
    async with LlmGateway(settings, services.db) as gateway:
        assert gateway.has_any_key()
        stream = await _ask(gateway)
    assert stream.text == "Hello from the fake model." and stream.token_id is None
    assert fake_llm.keys_called() == ["sk-env"]
    [row] = await _usage(services, gateway)
    assert row.token_id is None and row.success


async def test_env_key_is_the_last_resort_after_pool_keys_fail(
    services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-pool")
    fake_llm.script("sk-pool", fail(500))
    settings = dataclasses.replace(services.settings, openai_api_key="sk-env",
                                   openai_base_url=fake_llm.base_url)
    async with LlmGateway(settings, services.db) as gateway:
        await _ask(gateway)
    assert fake_llm.keys_called() == ["sk-pool", "sk-env"]


async def test_has_any_key_reflects_pool_and_env(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
) -> None:
    assert gateway.has_any_key() is False
    assert await gateway.has_any_key_async() is False
    with pytest.raises(NoKeyAvailable):
        await _ask(gateway)
    add_key("sk-a")
    assert gateway.has_any_key() is True


# --- one-shot calls -----------------------------------------------------------------------------


async def test_complete_chat_returns_the_whole_answer_and_fails_over(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-first", priority=1)
    second = add_key("sk-second", priority=2)
    fake_llm.script("sk-first", fail(429))
    fake_llm.script("sk-second", reply("All at once.", prompt_tokens=4, completion_tokens=3))
    assert await gateway.complete_chat(QUESTION, model=MODEL) == "All at once."
    assert [request.stream for request in fake_llm.requests] == [False, False]
    last = (await _usage(services, gateway))[-1]
    assert (last.token_id, last.total_tokens, last.success) == (second.id, 7, True)


async def test_complete_chat_can_be_cancelled(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a")
    fake_llm.script("sk-a", hang())
    token = CancelToken()

    def cancel_once_the_server_has_the_request() -> None:
        fake_llm.wait_until(lambda: bool(fake_llm.requests), WAIT_SECS)
        token.cancel()

    threading.Thread(target=cancel_once_the_server_has_the_request).start()
    with pytest.raises(LlmCancelled):
        await gateway.complete_chat(QUESTION, model=MODEL, cancel=token)
    assert fake_llm.wait_until(lambda: fake_llm.requests[0].disconnected, WAIT_SECS)


async def test_embeddings_come_back_in_order_through_the_pool(
    gateway: LlmGateway, services: Services, add_key: Callable[..., AiKeyRecord],
) -> None:
    key = add_key("sk-emb", model_access="text-embedding-3-small")
    texts = ["refund policy for orders", "opening hours"]
    vectors = await gateway.embed(texts, "text-embedding-3-small")
    assert len(vectors) == 2
    for vector, text in zip(vectors, texts, strict=True):
        assert vector == pytest.approx(embed_text(text, 64), abs=1e-6)
    [row] = await _usage(services, gateway)
    assert (row.token_id, row.request_type, row.success) == (key.id, "embedding", True)
    assert row.prompt_tokens > 0 and row.completion_tokens == 0
    assert await gateway.embed([], "text-embedding-3-small") == []


async def test_embeddings_fail_over_like_chat(
    gateway: LlmGateway, add_key: Callable[..., AiKeyRecord],
    fake_llm: FakeOpenAI,
) -> None:
    add_key("sk-a", priority=1, model_access="emb")
    add_key("sk-b", priority=2, model_access="emb")
    fake_llm.script("sk-a", fail(500))
    assert len(await gateway.embed(["hello"], "emb")) == 1
    assert fake_llm.keys_called() == ["sk-a", "sk-b"]
