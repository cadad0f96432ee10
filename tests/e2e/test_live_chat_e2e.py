"""The live chat end to end: a real uvicorn server (tests/e2e/live_server.py), real `websockets`
and httpx clients, the fake OpenAI-compatible server for the AI's streamed answers.

Every test runs twice: SQLite with the in-process event bus, and PostgreSQL with the Redis bus
(the server gets REDIS_URL). Everything travels over 127.0.0.1 and every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fakes.fixtures import fake_openai  # noqa: F401  (a fixture, found by name)
from fakes.openai_server import FakeOpenAI, reply
from live_server import (
    LiveServer,
    Shop,
    Socket,
    Visit,
    balance_of,
    bearer,
    is_message,
    is_type,
    jwt_of,
    open_shop,
)
from sqlalchemy import create_engine, select, text

from server.app import create_app
from server.context import Services
from server.errors import CloseCode
from server.store import presence as presence_store
from server.store.models import BalanceTransaction
from server.store.users import UserRecord

pytestmark = pytest.mark.parametrize(
    ("db_url", "redis_url"), [("sqlite", "memory"), ("postgresql", "redis")],
    indirect=True, ids=["sqlite-memory", "postgresql-redis"],
)

OPENAI_KEY = "sk-e2e-live-chat"
HTTP_TIMEOUT_SECS = 15.0
TOP_UP = 10_000  # 2,000 answers at the default price
FIRST_ANSWER = "We are open from nine to six, Monday to Saturday."
SECOND_ANSWER = "On Sundays we are closed, but the web shop is always open."
OPERATOR_REPLY = ("Hello, Olga here. " + "Let me look into your order for you. " * 7).strip()
FEED_TEXT_CHARS = 200
# 50 chunks of 7 characters, 50 ms apart: 2.5 s of streaming, plenty of time to take over.
LONG_ANSWER = " ".join(f"part{i:02d}" for i in range(50))
LONG_CHUNK_DELAY_SECS = 0.05
AFTER_TAKEOVER_LISTEN_SECS = 1.0
REFUND_WAIT_SECS = 10.0
BUSY_ANSWER = "Here is a short answer to that."
RECONNECT_CYCLES = 200
READERS = 4
MAX_VISITOR_MESSAGES = 400
MAX_OPERATOR_MESSAGES = 150
BUSY_CONVERSATION_LIMIT_SECS = 60.0
RACES = 3

MakeUser = Callable[..., UserRecord]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def settings_env(redis_url: str | None, fake_openai: FakeOpenAI) -> dict[str, str]:  # noqa: F811
    """The server's AI key points at the fake; REDIS_URL (Redis case) selects the Redis bus."""
    env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake_openai.base_url}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture(autouse=True)
def distinct_ids(db_url: str) -> None:
    """Redis pub/sub is shared by every test session on this Redis, and its bus channels are
    named by dialog and owner id: start those ids at a random point, not at 1, so two sessions
    running at once do not read each other's events."""
    if not db_url.startswith("postgresql"):
        return
    start = random.randint(10**6, 10**9)
    engine = create_engine(db_url)
    with engine.begin() as connection:
        for table in ("users", "dialogs"):
            connection.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                               {"t": table, "v": start})
    engine.dispose()


@pytest.fixture
def server(services: Services, redis_url: str | None) -> Iterator[LiveServer]:
    live = LiveServer(create_app(services=services)).start()
    try:
        # The backend pair is what the test id says: the bus follows REDIS_URL.
        assert services.live is not None
        bus = type(services.live.bus).__name__
        assert bus == ("RedisEventBus" if redis_url else "MemoryEventBus"), bus
        yield live
    finally:
        live.stop()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECS) as client:
        yield client


@pytest.fixture
async def shop(http: httpx.AsyncClient, services: Services, make_user: MakeUser) -> Shop:
    owner = make_user(first_name="Olga")
    return await open_shop(http, services, owner, make_user(role="admin"), balance=TOP_UP)


@contextlib.asynccontextmanager
async def sockets(*urls: str) -> AsyncIterator[list[Socket]]:
    """Open the sockets in order, wait for each one's `ready`; close them all at the end."""
    opened: list[Socket] = []
    try:
        for url in urls:
            opened.append(await Socket.open(url))
            await opened[-1].ready()
        yield opened
    finally:
        for socket in opened:
            await socket.close()


def shape(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["id"], m["seq"], m["sender"], m["text"], m["system_type"]) for m in messages]


# --- 1. visitor ↔ AI ↔ operator ----------------------------------------------------------------


async def test_visitor_ai_and_operator_share_one_conversation(
    server: LiveServer, http: httpx.AsyncClient, shop: Shop, fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.enqueue(reply(FIRST_ANSWER, chunks=5), reply(SECOND_ANSWER, chunks=4))
    visit = await shop.open_dialog(http)
    feed_url = server.ws_url("/ws/operator", token=shop.jwt)
    async with sockets(visit.visitor_url(server), visit.operator_url(server), feed_url) as opened:
        visitor, operator, feed = opened
        everyone = (visitor, operator, feed)

        # The AI answers, streamed.
        mark = visitor.cursor
        await visitor.send({"type": "message", "text": "When are you open?",
                            "client_message_id": "v-1"})
        question = await visitor.next(is_message("user"))
        assert question["seq"] == 1 and question["message"]["client_message_id"] == "v-1"
        answer = await visitor.next(is_message("assistant"))
        assert answer["seq"] == 2 and answer["message"]["text"] == FIRST_ANSWER
        window = visitor.frames[mark:visitor.cursor]
        kinds = [frame["type"] for frame in window]
        deltas = [frame for frame in window if frame["type"] == "ai_delta"]
        assert kinds.index("typing_start") < kinds.index("ai_delta")
        assert max(i for i, kind in enumerate(kinds) if kind == "ai_delta") \
            < kinds.index("typing_stop") < len(kinds) - 1
        assert len([d for d in deltas if d["delta"]]) >= 2, "the answer was not streamed"
        assert "".join(d["delta"] for d in deltas) == FIRST_ANSWER
        assert len({d["generation_id"] for d in deltas}) == 1
        assert all(d["dialog_id"] == visit.dialog_id for d in deltas)
        await operator.next(is_message("assistant", seq=2))
        await feed.next(is_message("assistant", seq=2))

        # The visitor asks for a human: everyone sees the request and its system message.
        requested = await visit.request_human(http)
        assert requested.status_code == 200, requested.text
        assert requested.json()["status"] == "requested"
        for socket in everyone:
            event = await socket.next(is_type("handoff_requested"))
            assert event["dialog_id"] == visit.dialog_id and event["seq"] == 3
            assert event["handoff"]["status"] == "requested"
        after_request = visitor.cursor

        # The operator takes over and replies over their socket.
        taken = await visit.handoff(http, "takeover")
        assert taken.status_code == 200, taken.text
        assert taken.json()["status"] == "active"
        assert taken.json()["assigned_manager"]["id"] == shop.owner.id
        for socket in everyone:
            event = await socket.next(is_type("handoff_started"))
            assert event["manager"]["id"] == shop.owner.id and event["seq"] == 4
            assert event["handoff"]["status"] == "active"
        await operator.send({"type": "typing"})
        typing = await visitor.next(is_type("typing_start"))
        assert typing["sender"] == "manager"
        await operator.send({"type": "message", "text": OPERATOR_REPLY})
        human = await visitor.next(is_message("manager"))
        assert human["seq"] == 5 and human["message"]["text"] == OPERATOR_REPLY

        # While the human handles the dialog the AI stays silent.
        await visitor.send({"type": "message", "text": "Thanks, Olga!"})
        await visitor.next(is_message("user", seq=6))
        notice = await visitor.next(is_type("message_received"))
        assert notice["seq"] == 6 and notice["message"]

        released = await visit.handoff(http, "release")
        assert released.status_code == 200, released.text
        assert released.json()["status"] == "released"
        for socket in everyone:
            event = await socket.next(is_type("handoff_released"))
            assert event["seq"] == 7 and event["handoff"]["status"] == "released"
        silent = visitor.frames[after_request:visitor.cursor]
        assert not [f for f in silent if f["type"] == "ai_delta"
                    or f["type"] == "typing_start" and f["sender"] == "assistant"], silent

        # Back to the AI.
        await visitor.send({"type": "message", "text": "And on Sundays?"})
        again = await visitor.next(is_message("assistant"))
        assert again["seq"] == 9 and again["message"]["text"] == SECOND_ANSWER
        await operator.next(is_message("assistant", seq=9))
        await feed.next(is_message("assistant", seq=9))

        stored = await visit.stored(http)
        assert [(m["seq"], m["sender"], m["system_type"]) for m in stored] == [
            (1, "user", None), (2, "assistant", None), (3, "system", "handoff_requested"),
            (4, "system", "handoff_started"), (5, "manager", None), (6, "user", None),
            (7, "system", "handoff_released"), (8, "user", None), (9, "assistant", None),
        ]
        assert shape(visitor.messages()) == shape(stored)
        assert shape(operator.messages()) == shape(stored)
        # The feed carries summaries: texts cut to 200 characters.
        summaries = [{**m, "text": m["text"][:FEED_TEXT_CHARS]} for m in stored]
        assert shape([m for m in feed.messages() if m["dialog_id"] == visit.dialog_id]) \
            == shape(summaries)
        [cut] = [m for m in feed.messages() if m["sender"] == "manager"]
        assert cut["truncated"] is True
        assert len([r for r in fake_openai.requests if r.path.endswith("/chat/completions")]) == 2


# --- 2. takeover while the AI streams ----------------------------------------------------------


@pytest.mark.parametrize("trigger", ["operator_takes_over", "visitor_asks_for_a_human"])
async def test_a_handoff_during_streaming_stops_the_answer_and_refunds_it(
    server: LiveServer, http: httpx.AsyncClient, services: Services, shop: Shop,
    fake_openai: FakeOpenAI, trigger: str,  # noqa: F811
) -> None:
    fake_openai.enqueue(reply(LONG_ANSWER, chunks=50, chunk_delay_secs=LONG_CHUNK_DELAY_SECS))
    visit = await shop.open_dialog(http)
    before = await balance_of(http, shop.headers)
    event = "handoff_started" if trigger == "operator_takes_over" else "handoff_requested"
    async with sockets(visit.visitor_url(server)) as (visitor,):
        await visitor.send({"type": "message", "text": "Tell me everything about your shop"})
        await visitor.next(is_type("ai_delta"))
        charged = await balance_of(http, shop.headers)
        assert charged < before, "the answer was not charged"

        if trigger == "operator_takes_over":  # the owner's force takeover (spec §4.4)
            changed = await http.post(f"/api/dialogs/{visit.dialog_id}/takeover",
                                      headers=shop.headers)
        else:
            changed = await visit.request_human(http)
        assert changed.status_code == 200, changed.text
        await visitor.next(is_type(event))
        changed_at = visitor.cursor
        await asyncio.sleep(AFTER_TAKEOVER_LISTEN_SECS)
        late = [f for f in visitor.frames[changed_at:]
                if f["type"] == "ai_delta" or is_message("assistant")(f)]
        assert late == [], f"AI output after {event}: {late}"
        assert [m for m in visitor.messages() if m["sender"] == "assistant"] == []
        assert visitor.events("typing_stop"), "the typing bubble was left on"

    stored = await visit.stored(http)
    assert [(m["seq"], m["sender"], m["system_type"]) for m in stored] == [
        (1, "user", None), (2, "system", event)]
    async with asyncio.timeout(REFUND_WAIT_SECS):
        while await balance_of(http, shop.headers) != before:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a second refund would land about now
    assert await balance_of(http, shop.headers) == before
    with services.db.read() as session:
        ledger = session.execute(
            select(BalanceTransaction.id, BalanceTransaction.transaction_type,
                   BalanceTransaction.related_id)
            .where(BalanceTransaction.user_id == shop.owner.id).order_by(BalanceTransaction.id)
        ).all()
    charges = [row for row in ledger if row.transaction_type == "widget_message"]
    refunds = [row for row in ledger if row.transaction_type == "refund"]
    assert len(charges) == 1 and len(refunds) == 1, ledger
    assert refunds[0].related_id == charges[0].id
    # The server hung up on the model instead of reading the answer to its end (2.5 s).
    [call] = fake_openai.requests
    async with asyncio.timeout(REFUND_WAIT_SECS):
        while not call.disconnected:
            await asyncio.sleep(0.05)
    assert not call.completed


# --- 3. readers that drop and resume during a busy conversation --------------------------------


class Reader:
    """A client that keeps dropping its socket and resuming with `since=<last seq held>`."""

    def __init__(self, url_of: Callable[[int], str], rng: random.Random) -> None:
        self.url_of = url_of
        self.rng = rng
        self.held: dict[int, dict[str, Any]] = {}
        self.last = 0
        self.problems: list[str] = []
        self.cycles = 0
        self.closes: list[int | None] = []

    def take(self, socket: Socket) -> None:
        for frame in socket.events("message:new"):
            seq = frame["seq"]
            if seq in self.held:
                self.problems.append(f"duplicate seq {seq}")
            elif seq != self.last + 1:
                self.problems.append(f"gap: held up to {self.last}, got {seq}")
            self.held[seq] = frame["message"]
            self.last = max(self.last, seq)

    async def cycle(self) -> None:
        socket = await Socket.open(self.url_of(self.last))
        try:
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))
        finally:
            if self.rng.random() < 0.5:
                socket.abort()
            else:
                await socket.close()
            await socket.wait_closed()
            self.closes.append(socket.close_code)
            self.take(socket)
            self.cycles += 1

    async def catch_up(self, last_seq: int) -> None:
        socket = await Socket.open(self.url_of(self.last))
        try:
            # `ready` carries the last seq replayed (or `since` itself when nothing was).
            await socket.next(lambda f: f["type"] in ("message:new", "ready")
                              and f.get("seq") == last_seq)
        finally:
            await socket.close()
            self.take(socket)


@pytest.mark.parametrize("mode", ["operator_mode", "ai_mode"])
async def test_readers_dropping_and_resuming_hold_every_message_once(
    server: LiveServer, http: httpx.AsyncClient, services: Services, shop: Shop,
    fake_openai: FakeOpenAI, mode: str,  # noqa: F811
) -> None:
    """Four readers (two visitor sockets, two operator sockets) drop and resume 200 times in
    all while the conversation is busy.

    `operator_mode`: the dialog is taken over first, so no AI answer interleaves; the visitor
    writes over its socket every few ms and the operator over REST, as fast as they can.
    `ai_mode`: the visitor writes over its socket every 10-120 ms and the AI answers (a newer
    question supersedes an answer still streaming); each answer kept is paid for exactly once.
    """
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    visit = await shop.open_dialog(http)
    if mode == "operator_mode":
        taken = await http.post(f"/api/dialogs/{visit.dialog_id}/takeover", headers=shop.headers)
        assert taken.status_code == 200, taken.text
        pause = (0.002, 0.008)
    else:
        fake_openai.default = reply(BUSY_ANSWER, chunks=4, chunk_delay_secs=0.005)
        pause = (0.01, 0.12)
    readers = [
        Reader(lambda since: visit.visitor_url(server, since), random.Random(rng.random()))
        for _ in range(READERS // 2)
    ] + [
        Reader(lambda since: visit.operator_url(server, since), random.Random(rng.random()))
        for _ in range(READERS - READERS // 2)
    ]
    budget = iter(range(RECONNECT_CYCLES))
    cycles_done = asyncio.Event()
    sent_ids: list[str] = []
    posted: list[int] = []

    async def drop_and_resume(reader: Reader) -> None:
        while next(budget, None) is not None:
            await reader.cycle()

    async def visitor_writes(socket: Socket) -> None:
        for i in range(MAX_VISITOR_MESSAGES):
            if cycles_done.is_set():
                return
            sent_ids.append(f"v-{i}")
            await socket.send({"type": "message", "text": f"visitor {i}",
                               "client_message_id": f"v-{i}"})
            await asyncio.sleep(rng.uniform(*pause))

    async def operator_writes() -> None:
        for i in range(MAX_OPERATOR_MESSAGES if mode == "operator_mode" else 0):
            if cycles_done.is_set():
                return
            response = await http.post(f"/api/dialogs/{visit.dialog_id}/messages",
                                       json={"text": f"operator {i}", "sender": "manager"},
                                       headers=shop.headers)
            assert response.status_code == 200, response.text
            posted.append(response.json()["seq"])
            await asyncio.sleep(rng.uniform(0.002, 0.01))

    async def readers_then_stop() -> None:
        await asyncio.gather(*(drop_and_resume(reader) for reader in readers))
        cycles_done.set()

    async with asyncio.timeout(BUSY_CONVERSATION_LIMIT_SECS), \
            sockets(visit.visitor_url(server)) as (writer,):
        await asyncio.gather(visitor_writes(writer), operator_writes(), readers_then_stop())
        # Every message the visitor sent is committed once its echo came back.
        for cid in sent_ids:
            last_question = await writer.next(lambda f, c=cid: is_message("user")(f)
                                              and f["message"]["client_message_id"] == c)
        if mode == "ai_mode":
            # The last question is never superseded: at least one answer follows it. Then a
            # takeover fences the conversation: it stops any answer still streaming, and no AI
            # message may follow its system message.
            await writer.next(lambda f: is_message("assistant")(f)
                              and f["seq"] > last_question["seq"])
            fence = await http.post(f"/api/dialogs/{visit.dialog_id}/takeover",
                                    headers=shop.headers)
            assert fence.status_code == 200, fence.text
            await writer.next(lambda f: is_message("system")(f)
                              and f["message"]["system_type"] == "handoff_started")
        stored = await visit.stored(http)
        last_seq = len(stored)
        for reader in readers:
            await reader.catch_up(last_seq)

    assert [m["seq"] for m in stored] == list(range(1, last_seq + 1))
    senders = [m["sender"] for m in stored]
    assert senders.count("user") == len(sent_ids) and senders.count("manager") == len(posted)
    assert sum(reader.cycles for reader in readers) == RECONNECT_CYCLES
    expected = shape(stored)
    assert shape(writer.messages()) == expected, f"seed {seed}"
    for reader in readers:
        assert reader.problems == [], f"seed {seed}: {reader.problems[:10]}"
        assert shape([reader.held[seq] for seq in sorted(reader.held)]) == expected, \
            f"seed {seed}"
    answers = senders.count("assistant")
    if mode == "operator_mode":
        assert answers == 0
        return
    assert answers >= 1 and stored[-1]["system_type"] == "handoff_started"
    # Every question was charged; every answer dropped (superseded or fenced) is refunded,
    # the fenced one possibly a moment after the takeover.
    async with asyncio.timeout(REFUND_WAIT_SECS):
        while (paid := net_charges(services, shop.owner.id)) != answers:
            await asyncio.sleep(0.05)
    assert paid == answers


def net_charges(services: Services, user_id: int) -> int:
    """Widget answers charged minus refunded, from the ledger."""
    with services.db.read() as session:
        ledger = session.execute(
            select(BalanceTransaction.transaction_type).where(BalanceTransaction.user_id == user_id)
        ).scalars().all()
    return ledger.count("widget_message") - ledger.count("refund")


# --- 4. two operators racing -------------------------------------------------------------------


def active_chats(services: Services, user_id: int) -> int | None:
    with services.db.read() as session:
        presence = presence_store.get_presence(session, user_id)
    return presence.active_chats if presence is not None else None


@pytest.mark.parametrize("route", ["handoff", "legacy"])
async def test_two_operators_racing_for_a_dialog_one_wins_and_the_loser_keeps_no_slot(
    server: LiveServer, http: httpx.AsyncClient, services: Services, shop: Shop,
    make_user: MakeUser, route: str,
) -> None:
    """`handoff`: the canonical takeover of a requested dialog; `legacy`: the owner's force
    takeover (`POST /api/dialogs/{id}/takeover`) of a dialog nobody asked a human for."""
    rival = make_user(role="admin", first_name="Rita")
    contenders = {shop.owner.id: shop.headers, rival.id: bearer(services, rival)}
    won = dict.fromkeys(contenders, 0)
    for _ in range(RACES):
        visit = await shop.open_dialog(http)
        if route == "handoff":
            requested = await visit.request_human(http)
            assert requested.status_code == 200, requested.text
            calls = [visit.handoff(http, "takeover", headers) for headers in contenders.values()]
        else:
            calls = [http.post(f"/api/dialogs/{visit.dialog_id}/takeover", headers=headers)
                     for headers in contenders.values()]
        results = await asyncio.gather(*calls)
        by_user = dict(zip(contenders, results, strict=True))
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
        [winner] = [user_id for user_id, r in by_user.items() if r.status_code == 200]
        [loser] = [user_id for user_id, r in by_user.items() if r.status_code == 409]
        assert by_user[loser].json()["code"] == "conflict"
        won[winner] += 1
        status = await http.get(f"/api/dialogs/{visit.dialog_id}/handoff/status",
                                headers=shop.headers)
        assert status.json()["status"] == "active"
        assert status.json()["assigned_manager"]["id"] == winner
        for user_id, count in won.items():
            assert active_chats(services, user_id) == count, (user_id, won)


# --- 5. security over the real server ----------------------------------------------------------


async def test_a_visitor_with_another_guest_id_is_refused(
    server: LiveServer, http: httpx.AsyncClient, shop: Shop
) -> None:
    visit = await shop.open_dialog(http)
    url = server.ws_url(f"/ws/site/dialogs/{visit.dialog_id}", site_token=shop.site_token,
                        guest_id="guest-someone-else", since=0)
    socket = await Socket.open(url)
    assert await socket.wait_closed() == CloseCode.FORBIDDEN
    assert socket.events() == []


async def test_a_site_token_of_a_rotated_embed_code_is_refused(
    server: LiveServer, http: httpx.AsyncClient, shop: Shop
) -> None:
    visit = await shop.open_dialog(http)
    rotated = await http.post(f"/api/assistants/{shop.assistant_id}/embed-code/rotate",
                              headers=shop.headers)
    assert rotated.status_code == 200, rotated.text
    old = await Socket.open(visit.visitor_url(server))
    assert await old.wait_closed() == CloseCode.CREDENTIAL_INVALID
    fresh = Visit(Shop(shop.owner, shop.headers, shop.assistant_id, rotated.json()["token"]),
                  visit.dialog_id, visit.guest_id)
    async with sockets(fresh.visitor_url(server)) as (socket,):
        assert socket.close_code is None


async def test_another_tenant_can_neither_watch_nor_take_over_a_dialog(
    server: LiveServer, http: httpx.AsyncClient, services: Services, shop: Shop,
    make_user: MakeUser,
) -> None:
    visit = await shop.open_dialog(http)
    assert (await visit.request_human(http)).status_code == 200
    stranger = bearer(services, make_user())
    watcher = await Socket.open(visit.operator_url(server, jwt=jwt_of(stranger)))
    assert await watcher.wait_closed() == CloseCode.FORBIDDEN
    assert watcher.events() == []
    for path in (f"/api/dialogs/{visit.dialog_id}/handoff/takeover",
                 f"/api/dialogs/{visit.dialog_id}/takeover"):
        refused = await http.post(path, json={}, headers=stranger)
        assert refused.status_code == 404, (path, refused.text)
    status = await http.get(f"/api/dialogs/{visit.dialog_id}/handoff/status",
                            headers=shop.headers)
    assert status.json()["status"] == "requested"


async def test_bad_frames_get_error_frames_and_the_socket_stays_usable(
    server: LiveServer, http: httpx.AsyncClient, shop: Shop
) -> None:
    visit = await shop.open_dialog(http)
    async with sockets(visit.visitor_url(server)) as (visitor,):
        await visitor.send('{"type": "message", "text": "' + "x" * (64 * 1024) + '"}')
        oversized = await visitor.next(is_type("error"))
        assert oversized["code"] == "frame_too_large"
        await visitor.send("{this is not json")
        assert (await visitor.next(is_type("error")))["code"] == "bad_frame"
        await visitor.send("[1, 2, 3]")
        assert (await visitor.next(is_type("error")))["code"] == "bad_frame"
        await visitor.send("__ping__")
        async with asyncio.timeout(5):
            while "__pong__" not in visitor.frames:
                await asyncio.sleep(0.01)
        await visitor.send({"type": "message", "text": "Still there?",
                            "client_message_id": f"c-{uuid.uuid4().hex[:8]}"})
        echoed = await visitor.next(is_message("user"))
        assert echoed["seq"] == 1 and echoed["message"]["text"] == "Still there?"
        assert visitor.close_code is None
