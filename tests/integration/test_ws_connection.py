"""`server/ws/connection.py` behind a tiny door, with a real in-process event bus.

The door of the test app does what the product's doors do (accept, take a limit slot,
subscribe, then `serve`) with a fake store: a list of committed message:new events per dialog
and a fake "actor" that commits, then publishes. It runs under Starlette's TestClient and under
a real uvicorn (uvloop, httptools, websockets-sansio) driven by the `websockets` client.

Every wait is bounded by WAIT_SECS and fails the test when it runs out; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.actors.bus import EventBus, build_bus, dialog_channel, owner_channel
from server.errors import AppError, CloseCode, ErrorCode
from server.ws.connection import Connection, Heartbeat, serve
from server.ws.limits import ConnectionLimits, LimitExceeded
from server.ws.protocol import MAX_FRAME_BYTES, SendText, Typing

WAIT_SECS = 10.0
OWNER_ID = 1
Event = dict[str, Any]


# --- the test app -------------------------------------------------------------------------------


def message_event(dialog_id: int, seq: int, text: str, sender: str = "user") -> Event:
    message = {"id": 1000 + seq, "dialog_id": dialog_id, "seq": seq, "sender": sender,
               "text": text, "timestamp": "2025-01-01T00:00:00Z", "system_type": None,
               "client_message_id": None}
    return {"type": "message:new", "dialog_id": dialog_id, "seq": seq,
            "timestamp": message["timestamp"], "message": message}


@dataclass
class Backend:
    """What the door uses; the bus and loop are set by the app's lifespan."""

    limits: ConnectionLimits = field(default_factory=lambda: ConnectionLimits(2, 3))
    messages: dict[int, list[Event]] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    # Commit and publish one more message while the door reads the replay (the resume race).
    race_on_replay: bool = False
    # Publish this many messages while the door reads the replay (a burst during catch-up).
    flood_on_replay: int = 0
    bus: EventBus | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def store(self, dialog_id: int, count: int) -> None:
        for _ in range(count):
            self._commit(dialog_id, "stored")

    def _commit(self, dialog_id: int, text: str) -> Event:
        stored = self.messages.setdefault(dialog_id, [])
        event = message_event(dialog_id, len(stored) + 1, text)
        stored.append(event)
        return event

    async def post(self, dialog_id: int, text: str) -> Event:
        """The fake actor: commit, then publish."""
        assert self.bus is not None
        event = self._commit(dialog_id, text)
        await self.bus.publish_async(dialog_channel(dialog_id), event)
        return event

    def replay_of(self, dialog_id: int) -> Callable[[int], Any]:
        async def replay(since: int) -> list[Event]:
            if self.race_on_replay:
                await self.post(dialog_id, "raced")
            for _ in range(self.flood_on_replay):
                await self.post(dialog_id, "burst")
            return [event for event in self.messages.get(dialog_id, []) if event["seq"] > since]

        return replay


def _connection(websocket: WebSocket, backend: Backend) -> Connection:
    """Queue size, heartbeat and close timeout come from the query so each test sets its own."""
    query = websocket.query_params
    heartbeat = Heartbeat(
        interval_secs=float(query.get("ping", "25")),
        idle_timeout_secs=float(query.get("idle", "60")),
    )
    connection = Connection(
        websocket,
        queue_size=int(query.get("queue", "256")),
        heartbeat=heartbeat,
        close_timeout_secs=float(query.get("close_timeout", "5")),
    )
    backend.connections.append(connection)
    return connection


async def dialog_door(websocket: WebSocket) -> None:
    backend: Backend = websocket.app.state.backend
    assert backend.bus is not None
    dialog_id = int(websocket.path_params["dialog_id"])
    since = websocket.query_params.get("since")
    await websocket.accept()
    try:
        async with backend.limits.slot(dialog_id):
            subscription = await backend.bus.subscribe(
                dialog_channel(dialog_id), max_queue=int(websocket.query_params.get("sub", "256"))
            )
            connection = _connection(websocket, backend)

            async def on_frame(frame: SendText | Typing) -> None:
                await _act(backend, connection, dialog_id, frame)

            await serve(
                connection,
                subscription,
                dialog_id=dialog_id,
                since=int(since) if since is not None else None,
                replay=backend.replay_of(dialog_id) if since is not None else None,
                on_frame=on_frame,
            )
    except LimitExceeded as exc:
        await websocket.close(CloseCode.TRY_AGAIN_LATER, exc.reason)


async def _act(backend: Backend, connection: Connection, dialog_id: int,
               frame: SendText | Typing) -> None:
    """The door's on_frame: a few magic texts drive the failure paths."""
    assert backend.bus is not None
    if isinstance(frame, Typing):
        await backend.bus.publish_async(dialog_channel(dialog_id), {
            "type": "typing_start", "dialog_id": dialog_id, "seq": 0, "sender": "user"})
        return
    command, _, argument = frame.text.partition(":")
    if command == "refuse":
        raise AppError(ErrorCode.FORBIDDEN, "not yours")
    if command == "crash":
        raise RuntimeError("a bug in the door")
    if command == "burst":  # offers faster than any socket drains: the outbound queue fills
        for number in range(int(argument)):
            connection.offer({"type": "ai_delta", "dialog_id": dialog_id, "delta": str(number)})
        return
    if command == "flood":  # published in one loop turn: the bus subscription fills
        for number in range(int(argument)):
            await backend.bus.publish_async(dialog_channel(dialog_id), {
                "type": "ai_delta", "dialog_id": dialog_id, "delta": str(number)})
        return
    await backend.post(dialog_id, frame.text)


async def operator_door(websocket: WebSocket) -> None:
    backend: Backend = websocket.app.state.backend
    assert backend.bus is not None
    await websocket.accept()
    try:
        async with backend.limits.slot(None):
            subscription = await backend.bus.subscribe(owner_channel(OWNER_ID))
            await serve(_connection(websocket, backend), subscription)
    except LimitExceeded as exc:
        await websocket.close(CloseCode.TRY_AGAIN_LATER, exc.reason)


def make_app(backend: Backend) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        backend.loop = asyncio.get_running_loop()
        backend.bus = build_bus(None, backend.loop)
        await backend.bus.start()
        yield
        await backend.bus.stop()

    app = Starlette(
        routes=[WebSocketRoute("/ws/dialogs/{dialog_id:int}", dialog_door),
                WebSocketRoute("/ws/operator", operator_door)],
        lifespan=lifespan,
    )
    app.state.backend = backend
    return app


# --- TestClient helpers -------------------------------------------------------------------------


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
def client(backend: Backend) -> Iterator[TestClient]:
    with TestClient(make_app(backend)) as test_client:
        yield test_client


def receive(ws: WebSocketTestSession) -> dict[str, Any]:
    """The next ASGI message the app sent, within WAIT_SECS (TestClient's own receive has no
    timeout, so this reads its stream through the session's portal with one)."""

    async def bounded() -> dict[str, Any]:
        with anyio.fail_after(WAIT_SECS):
            return dict(await ws._send_rx.receive())

    return ws.portal.call(bounded)


def receive_frame(ws: WebSocketTestSession) -> Any:
    message = receive(ws)
    assert message["type"] == "websocket.send", message
    text = message["text"]
    return text if text.startswith("__") else orjson.loads(text)


def frames_until_close(ws: WebSocketTestSession, limit: int = 500) -> tuple[list[Any], int, str]:
    frames: list[Any] = []
    for _ in range(limit):
        message = receive(ws)
        if message["type"] == "websocket.close":
            return frames, message["code"], message.get("reason") or ""
        frames.append(orjson.loads(message["text"]))
    raise AssertionError(f"no close after {limit} frames")


def seqs(frames: list[Any]) -> list[Any]:
    return [(frame["type"], frame.get("seq")) for frame in frames]


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- resume: replay, ready, live ------------------------------------------------------------------


def test_replay_then_ready_then_live_delivers_each_message_once(
    client: TestClient, backend: Backend
) -> None:
    backend.store(7, 3)
    backend.race_on_replay = True  # seq 4 is committed and published during the replay
    with client.websocket_connect("/ws/dialogs/7?since=1") as ws:
        head = [receive_frame(ws) for _ in range(4)]
        assert seqs(head) == [("message:new", 2), ("message:new", 3), ("message:new", 4),
                              ("ready", 4)]
        assert head[3] == {"type": "ready", "dialog_id": 7, "seq": 4}
        # The live copy of seq 4 sits in the subscription before seq 5: were it not dropped, it
        # would arrive here first.
        client.portal.call(backend.post, 7, "after")
        fifth = receive_frame(ws)
        assert (fifth["seq"], fifth["message"]["text"]) == (5, "after")


def test_live_duplicates_are_dropped_but_other_events_pass(
    client: TestClient, backend: Backend
) -> None:
    backend.store(8, 2)
    with client.websocket_connect("/ws/dialogs/8?since=0") as ws:
        assert seqs([receive_frame(ws) for _ in range(3)]) == [
            ("message:new", 1), ("message:new", 2), ("ready", 2)]
        assert backend.bus is not None
        backend.bus.publish(dialog_channel(8), message_event(8, 2, "redelivered"))
        backend.bus.publish(dialog_channel(8), {"type": "handoff_requested", "dialog_id": 8,
                                                "seq": 2, "timestamp": "t"})
        backend.bus.publish(dialog_channel(8), message_event(8, 1, "older"))
        ws.send_json({"type": "typing"})
        ws.send_json({"type": "message", "text": "next"})
        assert seqs([receive_frame(ws) for _ in range(3)]) == [
            ("handoff_requested", 2), ("typing_start", 0), ("message:new", 3)]


def test_without_since_there_is_no_replay_and_live_events_flow(
    client: TestClient, backend: Backend
) -> None:
    backend.store(9, 5)
    with client.websocket_connect("/ws/dialogs/9") as ws:
        assert receive_frame(ws) == {"type": "ready", "dialog_id": 9}
        ws.send_json({"type": "message", "text": "hello", "client_message_id": "c1"})
        frame = receive_frame(ws)
        assert (frame["type"], frame["seq"], frame["message"]["text"]) == ("message:new", 6,
                                                                          "hello")


def test_operator_feed_has_no_replay_and_no_dedupe(client: TestClient, backend: Backend) -> None:
    with client.websocket_connect("/ws/operator") as ws:
        assert receive_frame(ws) == {"type": "ready"}
        assert backend.bus is not None
        for dialog_id in (1, 2, 2):  # the same seq in two dialogs, and a repeat: all pass
            backend.bus.publish(owner_channel(OWNER_ID), message_event(dialog_id, 1, "x"))
        frames = [receive_frame(ws) for _ in range(3)]
        assert [(frame["dialog_id"], frame["seq"]) for frame in frames] == [(1, 1), (2, 1), (2, 1)]
        ws.send_json({"type": "message", "text": "hi"})
        assert receive_frame(ws) == {"type": "error", "code": "bad_frame",
                                     "detail": "this socket does not accept messages"}


# --- client frames ------------------------------------------------------------------------------


def test_bad_frames_get_error_frames_and_the_socket_keeps_working(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/10") as ws:
        receive_frame(ws)  # ready
        ws.send_text("hello")
        ws.send_text("[1, 2]")
        ws.send_text('{"type":"shout"}')
        ws.send_bytes(b"\xff\xfe")
        ws.send_json({"type": "message", "text": ""})
        ws.send_json({"type": "message", "text": "x", "client_message_id": 5})
        errors = [receive_frame(ws) for _ in range(6)]
        assert [error["type"] for error in errors] == ["error"] * 6
        assert [error["detail"] for error in errors] == [
            "frame is not valid JSON", "frame must be a JSON object", "unknown frame type",
            "frame is not valid UTF-8", "text must not be empty",
            "client_message_id must be a string"]
        assert {error["code"] for error in errors} == {"bad_frame"}
        ws.send_json({"type": "message", "text": "still here"})
        frame = receive_frame(ws)
        assert (frame["type"], frame["message"]["text"]) == ("message:new", "still here")


def test_more_than_twenty_bad_frames_in_a_row_close_with_1008(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/11") as ws:
        receive_frame(ws)  # ready
        for _ in range(20):
            ws.send_text("nope")
        ws.send_json({"type": "pong"})  # a good frame ends the run
        for _ in range(21):
            ws.send_text("nope")
        frames, code, reason = frames_until_close(ws)
    assert [frame["code"] for frame in frames] == ["bad_frame"] * 40
    assert (code, reason) == (CloseCode.PROTOCOL_VIOLATION, "too many bad frames")


def test_second_oversized_frame_closes_with_1008(client: TestClient) -> None:
    oversized = '{"type":"typing","pad":"' + "p" * MAX_FRAME_BYTES + '"}'
    with client.websocket_connect("/ws/dialogs/12") as ws:
        receive_frame(ws)  # ready
        ws.send_text(oversized)
        assert receive_frame(ws)["code"] == "frame_too_large"
        ws.send_json({"type": "message", "text": "fine"})
        assert receive_frame(ws)["type"] == "message:new"
        ws.send_text(oversized)
        frames, code, _ = frames_until_close(ws)
    assert (frames, code) == ([], CloseCode.PROTOCOL_VIOLATION)


def test_legacy_ping_is_answered_and_pongs_are_silent(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/13") as ws:
        receive_frame(ws)  # ready
        ws.send_text("__pong__")
        ws.send_json({"type": "pong"})
        ws.send_text("__ping__")
        assert receive_frame(ws) == "__pong__"


def test_door_errors_become_error_frames_and_the_socket_stays_open(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/14") as ws:
        receive_frame(ws)  # ready
        ws.send_json({"type": "message", "text": "refuse"})
        assert receive_frame(ws) == {"type": "error", "code": "forbidden", "detail": "not yours"}
        ws.send_json({"type": "message", "text": "crash"})
        assert receive_frame(ws) == {"type": "error", "code": "internal_error",
                                     "detail": "internal error"}
        ws.send_json({"type": "message", "text": "works"})
        assert receive_frame(ws)["message"]["text"] == "works"


# --- closing --------------------------------------------------------------------------------------


def test_full_outbound_queue_closes_with_4008(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/15?queue=4") as ws:
        receive_frame(ws)  # ready
        ws.send_json({"type": "message", "text": "burst:50"})
        frames, code, reason = frames_until_close(ws)
    assert (code, reason) == (CloseCode.SLOW_CONSUMER, "slow consumer")
    assert len(frames) <= 4


def test_a_burst_overflowing_the_catch_up_buffer_closes_with_4008(
    client: TestClient, backend: Backend
) -> None:
    # Live events wait in the subscription while the replay is read (after it they go straight
    # to the connection's own queue): a burst beyond its bound means resume from the store.
    backend.flood_on_replay = 50
    with client.websocket_connect("/ws/dialogs/16?sub=5&since=0") as ws:
        _, code, _ = frames_until_close(ws)
    assert code == CloseCode.SLOW_CONSUMER
    assert backend.bus is not None and backend.bus.overflows == 1


def test_close_from_outside_reaches_the_client(client: TestClient, backend: Backend) -> None:
    with client.websocket_connect("/ws/dialogs/17") as ws:
        receive_frame(ws)  # ready
        reason = "replaced by a newer connection " + "x" * 200
        backend.connections[-1].close(CloseCode.REPLACED, reason)
        backend.connections[-1].close(CloseCode.GOING_AWAY, "later calls do not change it")
        frames, code, got_reason = frames_until_close(ws)
    assert (frames, code) == ([], CloseCode.REPLACED)
    assert got_reason.startswith("replaced by a newer connection")
    assert len(got_reason.encode()) < 123
    assert not backend.connections[-1].offer({"type": "ping"})


def test_bus_stop_closes_with_1001_and_subscriptions_are_released(
    client: TestClient, backend: Backend
) -> None:
    assert backend.bus is not None
    bus = backend.bus
    with client.websocket_connect("/ws/dialogs/18") as ws:
        receive_frame(ws)  # ready
        assert bus.subscriber_count(dialog_channel(18)) == 1
        client.portal.call(bus.stop)
        _, code, reason = frames_until_close(ws)
    assert (code, reason) == (CloseCode.GOING_AWAY, "server going away")
    assert bus.subscriber_count(dialog_channel(18)) == 0
    wait_until(lambda: backend.limits.total == 0)


def test_heartbeat_pings_a_client_that_answers(client: TestClient) -> None:
    # Idle timeout far above the ping interval: a client answering pongs stays connected.
    with client.websocket_connect("/ws/dialogs/19?ping=0.02&idle=1") as ws:
        receive_frame(ws)  # ready
        for _ in range(60):  # about a second of pings: longer than the idle timeout
            assert receive_frame(ws) == {"type": "ping"}
            ws.send_json({"type": "pong"})
        ws.send_text("__ping__")
        for _ in range(10):  # pings may still be queued ahead of the answer
            if receive_frame(ws) == "__pong__":
                break
        else:
            raise AssertionError("no __pong__: the connection did not stay open")


def test_silent_client_is_closed_with_1001(client: TestClient) -> None:
    with client.websocket_connect("/ws/dialogs/20?ping=0.05&idle=0.3") as ws:
        frames, code, reason = frames_until_close(ws)
    assert frames[0]["type"] == "ready"
    assert {frame["type"] for frame in frames[1:]} <= {"ping"}
    assert (code, reason) == (CloseCode.GOING_AWAY, "idle timeout")


def test_connection_limits_close_with_1013(client: TestClient, backend: Backend) -> None:
    # per dialog 2, per process 3 (the Backend default)
    with client.websocket_connect("/ws/dialogs/21") as first, \
            client.websocket_connect("/ws/dialogs/21") as second:
        receive_frame(first), receive_frame(second)
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/ws/dialogs/21") as third:
            third.receive_json()
        assert (refused.value.code, refused.value.reason) == (
            CloseCode.TRY_AGAIN_LATER, "too many connections to this dialog")
        with client.websocket_connect("/ws/operator") as feed:
            assert receive_frame(feed) == {"type": "ready"}
            with pytest.raises(WebSocketDisconnect) as refused, \
                    client.websocket_connect("/ws/dialogs/22") as other:
                other.receive_json()
            assert (refused.value.code, refused.value.reason) == (
                CloseCode.TRY_AGAIN_LATER, "too many connections")
    wait_until(lambda: backend.limits.total == 0)
    with client.websocket_connect("/ws/dialogs/21") as again:
        assert receive_frame(again)["type"] == "ready"


# --- a real uvicorn and the websockets client --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_server(backend: Backend) -> Iterator[str]:
    """The app under uvicorn as the product runs it, in a thread with its own uvloop."""
    port = _free_port()
    config = uvicorn.Config(
        make_app(backend), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
        ws="websockets-sansio", ws_per_message_deflate=False, log_config=None,
        lifespan="on", timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_SECS * 2)
        assert not thread.is_alive(), "uvicorn did not stop"


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECS):
        while not check():
            await asyncio.sleep(0.01)


async def recv_json(ws: ClientConnection) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_SECS))


async def close_of(ws: ClientConnection, limit: int = 100_000) -> tuple[list[Any], int, str]:
    """Read every frame up to the server's close; its code and reason."""
    frames: list[Any] = []
    async with asyncio.timeout(WAIT_SECS * 3):
        for _ in range(limit):
            try:
                frames.append(await ws.recv())
            except ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                return frames, closed.rcvd.code, closed.rcvd.reason
    raise AssertionError(f"no close after {limit} frames")


async def on_server(backend: Backend, work: Any) -> Any:
    assert backend.loop is not None
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, backend.loop))


async def test_uvicorn_resume_replays_then_streams_without_duplicates(
    live_server: str, backend: Backend
) -> None:
    backend.store(30, 2)
    backend.race_on_replay = True
    async with connect(f"{live_server}/ws/dialogs/30?since=0", open_timeout=WAIT_SECS) as ws:
        head = [await recv_json(ws) for _ in range(4)]
        assert seqs(head) == [("message:new", 1), ("message:new", 2), ("message:new", 3),
                              ("ready", 3)]
        await ws.send(orjson.dumps({"type": "message", "text": "live", "client_message_id": "a"}))
        live = await recv_json(ws)
        assert (live["seq"], live["message"]["text"]) == (4, "live")
        await on_server(backend, backend.post(30, "from the actor"))
        assert (await recv_json(ws))["seq"] == 5


async def test_uvicorn_client_that_never_reads_is_closed_with_4008(
    live_server: str, backend: Backend
) -> None:
    # A tiny receive buffer, and a client that buffers one frame: the server's socket backs up
    # after a few hundred KB and its outbound queue (8 frames) overflows.
    sock = socket.create_connection(("127.0.0.1", int(live_server.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    url = f"{live_server}/ws/dialogs/31?queue=8&sub=100000&close_timeout=30"
    async with connect(url, sock=sock, max_queue=1, open_timeout=WAIT_SECS) as ws:
        assert (await recv_json(ws))["type"] == "ready"
        assert backend.bus is not None
        padding = "p" * 16_000
        async with asyncio.timeout(WAIT_SECS * 3):
            for number in range(5_000):
                backend.bus.publish(dialog_channel(31), {
                    "type": "ai_delta", "dialog_id": 31, "delta": padding, "n": number})
                if number % 50 == 49:
                    await asyncio.sleep(0.01)  # let the server's loop drain the bus
                    if backend.connections[-1].close_code is not None:
                        break
        assert backend.connections[-1].close_code == CloseCode.SLOW_CONSUMER
        frames, code, reason = await close_of(ws)
    assert (code, reason) == (CloseCode.SLOW_CONSUMER, "slow consumer")
    assert 0 < len(frames) < number
    await eventually(lambda: backend.limits.total == 0)


async def test_uvicorn_heartbeat_then_idle_close(live_server: str) -> None:
    url = f"{live_server}/ws/dialogs/32?ping=0.05&idle=0.5"
    async with connect(url, open_timeout=WAIT_SECS) as ws:
        frames, code, reason = await close_of(ws)
    parsed = [orjson.loads(frame) for frame in frames]
    assert parsed[0]["type"] == "ready"
    assert len(parsed) >= 3 and {frame["type"] for frame in parsed[1:]} == {"ping"}
    assert (code, reason) == (CloseCode.GOING_AWAY, "idle timeout")


async def test_uvicorn_bad_frames_then_the_socket_still_works(live_server: str) -> None:
    async with connect(f"{live_server}/ws/dialogs/33", open_timeout=WAIT_SECS) as ws:
        assert (await recv_json(ws))["type"] == "ready"
        await ws.send("not json")
        await ws.send(b"\xc3\x28")  # a binary frame that is not UTF-8
        await ws.send("x" * (MAX_FRAME_BYTES + 1))
        assert [(await recv_json(ws))["code"] for _ in range(3)] == [
            "bad_frame", "bad_frame", "frame_too_large"]
        await ws.send("__ping__")
        assert await asyncio.wait_for(ws.recv(), WAIT_SECS) == "__pong__"
        await ws.send(orjson.dumps({"type": "message", "text": "ok"}).decode())
        assert (await recv_json(ws))["message"]["text"] == "ok"


async def test_uvicorn_limits_refuse_with_1013_and_disconnects_release(
    live_server: str, backend: Backend
) -> None:
    url = f"{live_server}/ws/dialogs/34"
    async with connect(url, open_timeout=WAIT_SECS) as first, \
            connect(url, open_timeout=WAIT_SECS) as second:
        for ws in (first, second):
            assert (await recv_json(ws))["type"] == "ready"
        async with connect(url, open_timeout=WAIT_SECS) as third:
            _, code, reason = await close_of(third)
        assert (code, reason) == (CloseCode.TRY_AGAIN_LATER,
                                  "too many connections to this dialog")
    # Both clients left: their slots and subscriptions are released by serve() on disconnect.
    assert backend.bus is not None
    await eventually(lambda: backend.limits.total == 0)
    await eventually(lambda: backend.bus is not None
               and backend.bus.subscriber_count(dialog_channel(34)) == 0)
    assert [connection.disconnected for connection in backend.connections] == [True, True]
