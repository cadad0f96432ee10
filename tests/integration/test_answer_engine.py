"""The answer engine end to end: knowledge → prompt → charge → LLM (fake, real socket)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal

import anyio
import pytest
from sqlalchemy import select

from fakes.fixtures import fake_openai  # noqa: F401
from fakes.openai_server import FakeOpenAI, fail, reply
from server.ai.cancel import CancelToken
from server.ai.engine import WIDGET, AnswerEngine, AnswerOutcome, AnswerRequest
from server.ai.ingest import index_text
from server.ai.llm import LlmGateway
from server.ai.offline import INTRO
from server.ai.prompts import Turn
from server.billing import do_topup, seed_prices
from server.context import Services
from server.errors import AppError
from server.store import ai_keys, ai_usage
from server.store import billing as billing_store
from server.store.ai_keys import AiKeyRecord
from server.store.models import Assistant, BalanceTransaction, UserKnowledge
from server.store.users import UserRecord

KNOWLEDGE = ("Delivery to Berlin takes three working days. Express delivery arrives the next "
             "day for an extra fee of 9 euros. Orders ship from our warehouse in Leipzig.")


@dataclasses.dataclass
class Tenant:
    owner: UserRecord
    assistant_id: int


@pytest.fixture
def tenant(services: Services, make_user: Callable[..., UserRecord], admin: UserRecord) -> Tenant:
    owner = make_user()
    seed_prices(services.db)
    do_topup(services.db, admin.id, owner.id, Decimal("20.00"), None)
    with services.db.write() as session:
        assistant = Assistant(user_id=owner.id, name="Shop", system_prompt="You sell shoes.")
        session.add(assistant)
        session.flush()
        entry = UserKnowledge(user_id=owner.id, assistant_id=assistant.id, content=KNOWLEDGE)
        session.add(entry)
        session.flush()
        index_text(session, owner_id=owner.id, text=KNOWLEDGE, assistant_id=assistant.id,
                   knowledge_id=entry.id, doc_type="faq")
        return Tenant(owner, assistant.id)


def _engine(services: Services, **env: str) -> tuple[AnswerEngine, LlmGateway]:
    settings = dataclasses.replace(services.settings, **env)
    gateway = LlmGateway(settings, services.db)
    return AnswerEngine(services.db, gateway), gateway


@pytest.fixture
def add_key(services: Services, fake_openai: FakeOpenAI) -> Callable[..., AiKeyRecord]:  # noqa: F811
    def add(token: str, **fields: object) -> AiKeyRecord:
        with services.db.write() as session:
            return ai_keys.create_key(session, name=token, token=token, model_access="gpt-4o-mini",
                                      base_url=fake_openai.base_url, **fields)

    return add


def _daily_usage(services: Services, key_id: int) -> int:
    with services.db.read() as session:
        record = ai_keys.get_key(session, key_id)
    assert record is not None
    return record.daily_usage


def _usage_rows(services: Services) -> list[ai_usage.UsageRow]:
    with services.db.read() as session:
        return ai_usage.recent_usage(session)


def _balance(services: Services, user_id: int) -> Decimal:
    with services.db.read() as session:
        return billing_store.get_balance(session, user_id)


def _request(tenant: Tenant, question: str = "How long is delivery to Berlin?") -> AnswerRequest:
    return AnswerRequest(owner_id=tenant.owner.id, assistant_id=tenant.assistant_id,
                         question=question, history=(Turn("user", "hello"),
                                                     Turn("assistant", "Hi! How can I help?")),
                         channel=WIDGET, related_id=5)


async def _run(engine: AnswerEngine, request: AnswerRequest,
               cancel: CancelToken | None = None, stop_after: int | None = None
               ) -> tuple[list[str], AnswerOutcome]:
    prepared = await engine.prepare_async(request)
    outcome = AnswerOutcome()
    deltas: list[str] = []
    try:
        async for delta in engine.stream(prepared, outcome, cancel):
            deltas.append(delta)
            if stop_after is not None and len(deltas) == stop_after and cancel is not None:
                cancel.cancel("operator took over")
    finally:
        await engine.gateway.aclose()
    return deltas, outcome


def test_answer_is_grounded_streamed_and_charged(services: Services, tenant: Tenant,
                                                 fake_openai: FakeOpenAI) -> None:  # noqa: F811
    engine, gateway = _engine(services, openai_api_key="sk-engine",
                              openai_base_url=fake_openai.base_url)
    fake_openai.enqueue(reply("It takes three working days.", chunks=4))
    deltas, outcome = anyio.run(_run, engine, _request(tenant))
    assert "".join(deltas) == "It takes three working days." and len(deltas) == 4
    assert outcome.status == "completed" and not outcome.refunded
    sent = fake_openai.requests[-1]
    assert sent.messages[0]["content"].startswith("You sell shoes.")
    assert any("three working days" in m["content"] for m in sent.messages
               if m["role"] == "system")
    assert sent.messages[-1] == {"role": "user", "content": "How long is delivery to Berlin?"}
    assert sent.body["temperature"] == WIDGET.temperature
    assert _balance(services, tenant.owner.id) == Decimal("15.00")


def test_short_balance_refuses_before_any_model_call(services: Services, tenant: Tenant,
                                                     admin: UserRecord,
                                                     fake_openai: FakeOpenAI) -> None:  # noqa: F811
    do_topup(services.db, admin.id, tenant.owner.id, Decimal("-17.00"), None)
    engine, _ = _engine(services, openai_api_key="sk-engine", openai_base_url=fake_openai.base_url)
    with pytest.raises(AppError) as refused:
        engine.prepare(_request(tenant))
    assert refused.value.status == 402
    assert fake_openai.requests == []


def test_failed_answer_is_refunded(services: Services, tenant: Tenant,
                                   fake_openai: FakeOpenAI) -> None:  # noqa: F811
    engine, _ = _engine(services, openai_api_key="sk-engine", openai_base_url=fake_openai.base_url)
    fake_openai.script("sk-engine", fail(500))
    _deltas, outcome = anyio.run(_run, engine, _request(tenant))
    assert outcome.status == "failed" and outcome.refunded
    assert _balance(services, tenant.owner.id) == Decimal("20.00")
    with services.db.read() as session:
        kinds = session.execute(select(BalanceTransaction.transaction_type)
                                .where(BalanceTransaction.user_id == tenant.owner.id)).scalars().all()
    assert sorted(kinds) == ["admin_adjustment", "refund", "widget_message"]


def test_cancel_mid_stream_stops_text_and_refunds(services: Services, tenant: Tenant,
                                                  fake_openai: FakeOpenAI) -> None:  # noqa: F811
    engine, _ = _engine(services, openai_api_key="sk-engine", openai_base_url=fake_openai.base_url)
    fake_openai.enqueue(reply("one two three four five six", chunks=6, chunk_delay_secs=0.05))
    cancel = CancelToken()
    deltas, outcome = anyio.run(_run, engine, _request(tenant), cancel, 2)
    assert len(deltas) == 2
    assert outcome.status == "cancelled" and outcome.refunded
    assert _balance(services, tenant.owner.id) == Decimal("20.00")


def test_without_any_key_the_offline_responder_quotes_knowledge_for_free(
    services: Services, tenant: Tenant
) -> None:
    engine, _ = _engine(services)
    deltas, outcome = anyio.run(_run, engine, _request(tenant))
    text = "".join(deltas)
    assert text.startswith(INTRO["en"]) and "Delivery to Berlin takes three working days." in text
    assert outcome.status == "completed" and outcome.offline
    assert _balance(services, tenant.owner.id) == Decimal("20.00")


def test_another_tenants_assistant_is_not_found(services: Services, tenant: Tenant,
                                                make_user: Callable[..., UserRecord]) -> None:
    stranger = make_user()
    engine, _ = _engine(services)
    request = dataclasses.replace(_request(tenant), owner_id=stranger.id)
    with pytest.raises(AppError) as refused:
        engine.prepare(request)
    assert refused.value.status == 404


def test_embeddings_model_reranks_through_the_embeddings_endpoint(
    services: Services, tenant: Tenant, fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    extra = "Delivery to Munich is free of charge for orders above 50 euros."
    with services.db.write() as session:
        entry = UserKnowledge(user_id=tenant.owner.id, assistant_id=tenant.assistant_id,
                              content=extra)
        session.add(entry)
        session.flush()
        index_text(session, owner_id=tenant.owner.id, text=extra,
                   assistant_id=tenant.assistant_id, knowledge_id=entry.id)
    engine, _ = _engine(services, openai_api_key="sk-engine", embeddings_model="emb-small",
                        openai_base_url=fake_openai.base_url)
    fake_openai.enqueue(reply("(embeddings)"), reply("Three days."))  # one-shots, in order
    deltas, outcome = anyio.run(_run, engine, _request(tenant))
    assert outcome.status == "completed" and "".join(deltas) == "Three days."
    paths = [request.path for request in fake_openai.requests]
    assert paths[0].endswith("/embeddings") and paths[-1].endswith("/chat/completions")
    assert fake_openai.requests[0].model == "emb-small"
    chat = fake_openai.requests[-1]
    assert any("three working days" in m["content"] for m in chat.messages if m["role"] == "system")
    with services.db.read() as session:
        used = session.execute(select(UserKnowledge.usage_count)).scalars().all()
    assert sorted(used) == [1, 1]


# --- the AI key: reserved in prepare's transaction ------------------------------------------------


def test_the_key_is_reserved_in_prepare_and_its_usage_row_follows_the_answer(
    services: Services, tenant: Tenant, add_key: Callable[..., AiKeyRecord],
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    key = add_key("sk-pool")
    fake_openai.script("sk-pool", reply("Three days.", prompt_tokens=30, completion_tokens=3))
    engine, _ = _engine(services)
    prepared = engine.prepare(_request(tenant))
    assert _daily_usage(services, key.id) == 1  # counted before anything streams

    async def stream() -> AnswerOutcome:
        outcome = AnswerOutcome()
        try:
            async for _delta in engine.stream(prepared, outcome):
                pass
            assert await engine.gateway.flush_usage()
        finally:
            await engine.gateway.aclose()
        return outcome

    outcome = anyio.run(stream)
    assert outcome.status == "completed" and outcome.text == "Three days."
    assert fake_openai.keys_called() == ["sk-pool"]
    assert _daily_usage(services, key.id) == 1  # the stream did not reserve again
    [row] = _usage_rows(services)
    assert (row.token_id, row.user_id, row.assistant_id) == (key.id, tenant.owner.id,
                                                             tenant.assistant_id)
    assert (row.prompt_tokens, row.completion_tokens, row.success) == (30, 3, True)


def test_a_refused_charge_leaves_the_key_unreserved(
    services: Services, tenant: Tenant, admin: UserRecord,
    add_key: Callable[..., AiKeyRecord], fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    key = add_key("sk-pool")
    do_topup(services.db, admin.id, tenant.owner.id, Decimal("-17.00"), None)
    engine, _ = _engine(services)
    with pytest.raises(AppError) as refused:
        engine.prepare(_request(tenant))
    assert refused.value.status == 402
    assert _daily_usage(services, key.id) == 0
    assert fake_openai.requests == []


def test_cancel_before_the_stream_starts_gives_the_reservation_back(
    services: Services, tenant: Tenant, add_key: Callable[..., AiKeyRecord],
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    key = add_key("sk-pool")
    engine, _ = _engine(services)
    cancel = CancelToken()
    cancel.cancel("operator took over")
    deltas, outcome = anyio.run(_run, engine, _request(tenant), cancel)
    assert deltas == [] and outcome.status == "cancelled" and outcome.refunded
    assert _daily_usage(services, key.id) == 0
    assert fake_openai.requests == [] and _usage_rows(services) == []
    assert _balance(services, tenant.owner.id) == Decimal("20.00")


def test_a_failing_reserved_key_fails_over_to_the_next(
    services: Services, tenant: Tenant, add_key: Callable[..., AiKeyRecord],
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    first = add_key("sk-first", priority=1)
    second = add_key("sk-second", priority=2)
    fake_openai.script("sk-first", fail(500))
    fake_openai.script("sk-second", reply("Three days."))
    engine, _ = _engine(services)
    _deltas, outcome = anyio.run(_run, engine, _request(tenant))
    assert outcome.status == "completed" and outcome.text == "Three days."
    assert fake_openai.keys_called() == ["sk-first", "sk-second"]
    assert (_daily_usage(services, first.id), _daily_usage(services, second.id)) == (1, 1)
    rows = _usage_rows(services)  # the gateway's close wrote them
    assert [(row.token_id, row.success) for row in rows] == [(first.id, False),
                                                              (second.id, True)]
    assert _balance(services, tenant.owner.id) == Decimal("15.00")
