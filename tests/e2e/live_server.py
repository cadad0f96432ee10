"""A real server for the live-chat end-to-end tests, and the clients that talk to it.

`LiveServer` runs the app under uvicorn in a background thread, on a free 127.0.0.1 port, with
the options of `server/__main__.py` (uvloop, httptools, websockets-sansio, no per-message
deflate). `Socket` is a real `websockets` client whose frames a pump task collects, so a test
waits for "the next frame like this" with a timeout and a socket never stalls the server.
`Shop` is one tenant set up over HTTP: an owner with a balance, an assistant, its site token and
a visitor's dialog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.context import Services
from server.security import ACCESS
from server.store.users import UserRecord

START_TIMEOUT_SECS = 20.0
STOP_TIMEOUT_SECS = 15.0
GRACEFUL_SHUTDOWN_SECS = 5
FRAME_TIMEOUT_SECS = 10.0
OPEN_TIMEOUT_SECS = 5.0
CLOSE_TIMEOUT_SECS = 2.0
SITE = "https://shop.example"

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]


class LiveServer:
    """uvicorn serving `app` in a thread; `start()` returns once it accepts connections."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.crashed: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str, **params: Any) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"ws://127.0.0.1:{self.port}{path}{query}"

    def start(self) -> LiveServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self._socket = listener
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            log_config=None,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="live-e2e-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"the server did not start: {self.crashed!r}")
            time.sleep(0.02)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - reported by start() and stop()
            self.crashed = exc

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(STOP_TIMEOUT_SECS)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT_SECS)
            if self._thread.is_alive():
                raise RuntimeError("the server thread did not stop")
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None


class Socket:
    """A `websockets` client; a pump task appends every frame (JSON decoded) to `frames`."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[Frame | str] = []
        self.cursor = 0  # `next()` looks at frames from here on
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._pump = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> Socket:
        connection = await connect(url, compression=None, open_timeout=OPEN_TIMEOUT_SECS,
                                   close_timeout=CLOSE_TIMEOUT_SECS, max_size=2**22)
        return cls(connection)

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                text = raw if isinstance(raw, str) else raw.decode()
                self.frames.append(json.loads(text) if text.startswith("{") else text)
                self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._arrived.set()

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    def events(self, kind: str | None = None) -> list[Frame]:
        return [f for f in self.frames
                if isinstance(f, dict) and (kind is None or f.get("type") == kind)]

    def messages(self) -> list[Frame]:
        """The `message` of every message:new received, in arrival order."""
        return [f["message"] for f in self.events("message:new")]

    async def next(self, predicate: Predicate, timeout: float = FRAME_TIMEOUT_SECS) -> Frame:
        """The first frame from the cursor on that matches; the cursor moves past it."""
        async with asyncio.timeout(timeout):
            while True:
                while self.cursor < len(self.frames):
                    frame = self.frames[self.cursor]
                    self.cursor += 1
                    if isinstance(frame, dict) and predicate(frame):
                        return frame
                if self.closed.is_set():
                    raise AssertionError(f"closed ({self.close_code}) before a matching frame; "
                                         f"got {self.frames[-5:]}")
                self._arrived.clear()
                await self._arrived.wait()

    async def ready(self, timeout: float = FRAME_TIMEOUT_SECS) -> Frame:
        return await self.next(lambda f: f["type"] == "ready", timeout)

    async def send(self, frame: Frame | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def wait_closed(self, timeout: float = FRAME_TIMEOUT_SECS) -> int | None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.connection.close()
        await asyncio.wait_for(self._pump, CLOSE_TIMEOUT_SECS + 1)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a lost network does."""
        self.connection.transport.abort()


def is_message(sender: str | None = None, seq: int | None = None) -> Predicate:
    def match(frame: Frame) -> bool:
        if frame.get("type") != "message:new":
            return False
        message = frame["message"]
        return (sender is None or message["sender"] == sender) and (seq is None or frame["seq"] == seq)
    return match


def is_type(kind: str) -> Predicate:
    return lambda frame: frame.get("type") == kind


# --- one tenant, set up over HTTP ------------------------------------------------------------


def bearer(services: Services, user: UserRecord) -> dict[str, str]:
    issued = services.tokens.issue(user.id, user.email, user.token_version, ACCESS)
    return {"Authorization": f"Bearer {issued.token}"}


def jwt_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


@dataclasses.dataclass(frozen=True)
class Shop:
    owner: UserRecord
    headers: dict[str, str]
    assistant_id: int
    site_token: str

    @property
    def jwt(self) -> str:
        return jwt_of(self.headers)

    async def open_dialog(self, http: httpx.AsyncClient, guest_id: str | None = None) -> Visit:
        guest = guest_id or f"guest-{uuid.uuid4().hex[:10]}"
        params = {"site_token": self.site_token, "guest_id": guest}
        opened = await http.post("/api/site/dialogs", params=params, json={})
        assert opened.status_code == 200, opened.text
        return Visit(self, opened.json()["id"], guest)


@dataclasses.dataclass(frozen=True)
class Visit:
    """A visitor's dialog: the paths and calls of both sides of it."""

    shop: Shop
    dialog_id: int
    guest_id: str

    @property
    def params(self) -> dict[str, str]:
        return {"site_token": self.shop.site_token, "guest_id": self.guest_id}

    def visitor_url(self, server: LiveServer, since: int = 0) -> str:
        return server.ws_url(f"/ws/site/dialogs/{self.dialog_id}", **self.params, since=since)

    def operator_url(self, server: LiveServer, since: int = 0, jwt: str | None = None) -> str:
        return server.ws_url(f"/ws/dialogs/{self.dialog_id}", token=jwt or self.shop.jwt,
                             since=since)

    async def request_human(self, http: httpx.AsyncClient) -> httpx.Response:
        return await http.post(f"/api/dialogs/{self.dialog_id}/handoff/request",
                               params=self.params, json={"request_id": str(uuid.uuid4())})

    async def handoff(self, http: httpx.AsyncClient, action: str,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        return await http.post(f"/api/dialogs/{self.dialog_id}/handoff/{action}", json={},
                               headers=headers or self.shop.headers)

    async def stored(self, http: httpx.AsyncClient) -> list[Frame]:
        listed = await http.get(f"/api/dialogs/{self.dialog_id}/messages",
                                headers=self.shop.headers)
        assert listed.status_code == 200, listed.text
        return listed.json()


async def open_shop(http: httpx.AsyncClient, services: Services, owner: UserRecord,
                    admin: UserRecord, balance: int = 0) -> Shop:
    headers = bearer(services, owner)
    if balance:
        topped = await http.post(f"/api/admin/users/{owner.id}/balance/topup",
                                 json={"amount": balance}, headers=bearer(services, admin))
        assert topped.status_code == 200, topped.text
    created = await http.post("/api/assistants", json={"name": "Helper", "allowed_domains": SITE},
                              headers=headers)
    assert created.status_code == 200, created.text
    assistant_id = created.json()["id"]
    embed = await http.get(f"/api/assistants/{assistant_id}/embed-code", headers=headers)
    assert embed.status_code == 200, embed.text
    return Shop(owner, headers, assistant_id, embed.json()["token"])


async def balance_of(http: httpx.AsyncClient, headers: dict[str, str]) -> float:
    me = await http.get("/api/me", headers=headers)
    assert me.status_code == 200, me.text
    return float(me.json()["balance"])
