"""The WebSocket doors (spec §6.8 paths, DESIGN.md §5).

- `/ws/site/dialogs/{id}?site_token=…&guest_id=…[&since=N]` and
  `/ws/widget/dialogs/{id}?assistant_id=…&guest_id=…[&since=N]`: a visitor's dialog;
- `/ws/dialogs/{id}?token=<access JWT>[&since=N]`: the dialog's owner (or an admin) as operator;
- `/ws/operator?token=…` (legacy alias `/ws/dialogs?token=…`): the owner's operator feed.

Each door accepts, checks the credential (closing with the code of DESIGN.md §5 when it fails),
takes a connection slot, subscribes to the bus, and hands the socket to `ws.connection.serve`,
which replays `seq > since` from the store, then streams live events. Frames the client sends
become calls to the dialog's actor, exactly like the REST doors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from anyio import to_thread
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from server.actors import events
from server.actors.bus import dialog_channel, owner_channel
from server.actors.dialog import Typing as TypingCommand
from server.context import Services
from server.dialog_access import user_may_act, visitor_owns
from server.errors import AppError, CloseCode, ErrorCode
from server.http.guards import SiteCaller, resolve_site, resolve_user, resolve_widget
from server.live import VisitorGrant
from server.store import dialog_queries as queries
from server.store import dialogs as dialog_store
from server.store.dialog_queries import DialogRecord
from server.store.users import UserRecord
from server.ws.connection import Connection, serve
from server.ws.limits import LimitExceeded
from server.ws.protocol import SendText, Typing

log = logging.getLogger(__name__)

MAX_SINCE = 2**31 - 1

Serve = Callable[[], Awaitable[None]]
# Notices for the visitor that an operator's socket of the same dialog does not need.
VISITOR_ONLY = frozenset({events.MESSAGE_RECEIVED})


class Refused(Exception):
    """The connection is refused with a close code (the socket is already accepted)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _services(websocket: WebSocket) -> Services:
    return websocket.app.state.services


def _since(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("since")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_SINCE:
        raise Refused(CloseCode.PROTOCOL_VIOLATION, "since must be a non-negative integer")
    return int(raw)


def _dialog_id(websocket: WebSocket) -> int:
    raw = str(websocket.path_params.get("dialog_id", ""))
    if not raw.isdigit() or int(raw) > MAX_SINCE:
        raise Refused(CloseCode.NOT_FOUND, "dialog not found")
    return int(raw)


async def _user(services: Services, token: str | None) -> UserRecord:
    if not token:
        raise Refused(CloseCode.CREDENTIAL_INVALID, "token required")
    try:
        user, _claims = await resolve_user(services, token)
    except AppError as exc:
        if exc.code == ErrorCode.TOKEN_EXPIRED:
            raise Refused(CloseCode.CREDENTIAL_EXPIRED, "token expired") from exc
        if exc.status == 403:
            raise Refused(CloseCode.FORBIDDEN, str(exc.detail)) from exc
        raise Refused(CloseCode.CREDENTIAL_INVALID, "invalid token") from exc
    return user


async def _visitor(services: Services, websocket: WebSocket, widget: bool) -> SiteCaller:
    params = websocket.query_params
    try:
        if widget:
            return await resolve_widget(services, params.get("assistant_id"),
                                        params.get("guest_id"))
        return await resolve_site(services, params.get("site_token"), params.get("guest_id"))
    except AppError as exc:
        if exc.status == 404:
            raise Refused(CloseCode.NOT_FOUND, "assistant not found") from exc
        if exc.status == 422:
            raise Refused(CloseCode.PROTOCOL_VIOLATION, str(exc.detail)) from exc
        raise Refused(CloseCode.CREDENTIAL_INVALID, str(exc.detail)) from exc


async def _dialog(services: Services, dialog_id: int,
                  allowed: Callable[[DialogRecord], bool]) -> DialogRecord:
    def load() -> DialogRecord | None:
        with services.db.read() as session:
            return queries.get_dialog(session, dialog_id)

    dialog = await to_thread.run_sync(load)
    if dialog is None:
        raise Refused(CloseCode.NOT_FOUND, "dialog not found")
    if not allowed(dialog):
        raise Refused(CloseCode.FORBIDDEN, "not your dialog")
    return dialog


# --- serving a dialog --------------------------------------------------------------------------


def _serving(websocket: WebSocket, services: Services, dialog: DialogRecord, since: int | None,
             *, sender: str, author: UserRecord | None = None,
             grant: tuple[int, VisitorGrant] | None = None) -> Serve:
    """What to run for the rest of the socket's life; it keeps only ids and names, not the
    records the checks loaded (an idle socket should hold as little as possible)."""
    if since is not None:
        # A `since` beyond the dialog (a stale client) would make the seq filter drop every
        # new message up to it: resume from what exists.
        since = min(since, dialog.last_seq)
    return functools.partial(
        _serve_dialog, websocket, services, dialog.id, since, sender,
        author.id if author else None, author.first_name if author else None, grant,
    )


async def _serve_dialog(websocket: WebSocket, services: Services, dialog_id: int,
                        since: int | None, sender: str, author_id: int | None,
                        author_name: str | None,
                        grant: tuple[int, VisitorGrant] | None) -> None:
    live = services.live_system
    settings = services.settings
    connection: list[Connection] = []

    async def replay(after: int) -> Sequence[Mapping[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with services.db.read() as session:
                records = dialog_store.list_messages(session, dialog_id, after)
            return [events.message_new(record) for record in records]

        return await to_thread.run_sync(read)

    async def on_frame(frame: SendText | Typing) -> None:
        if isinstance(frame, Typing):
            live.dialogs.tell(dialog_id, TypingCommand(sender))
            return
        posted = await live.post(
            dialog_id, sender=sender, text=frame.text.strip() or frame.text,
            client_message_id=frame.client_message_id,
            author_user_id=author_id, author_name=author_name,
        )
        if posted.duplicate and connection:
            # A repeat is answered with the stored message again, as over REST (the live
            # event went out with the first copy).
            connection[0].offer(events.message_new(posted.message))

    await _run(websocket, services, dialog_id, dialog_channel(dialog_id), since,
               replay if since is not None else None, on_frame, settings.ws_outbound_queue,
               on_connection=connection.append, grant=grant,
               skip_types=VISITOR_ONLY if sender == "manager" else frozenset())


async def _run(
    websocket: WebSocket,
    services: Services,
    dialog_id: int | None,
    channel: str,
    since: int | None,
    replay: Callable[[int], Awaitable[Sequence[Mapping[str, Any]]]] | None,
    on_frame: Callable[[SendText | Typing], Awaitable[None]] | None,
    queue_size: int,
    on_connection: Callable[[Connection], None] | None = None,
    skip_types: frozenset[str] = frozenset(),
    grant: tuple[int, VisitorGrant] | None = None,
) -> None:
    live = services.live_system
    try:
        live.ws_limits.acquire(dialog_id)
    except LimitExceeded as exc:
        raise Refused(CloseCode.TRY_AGAIN_LATER, exc.reason) from exc
    try:
        subscription = await live.bus.subscribe(channel, max_queue=queue_size)
        connection = Connection(websocket, queue_size=queue_size)
        if on_connection is not None:
            on_connection(connection)
        live.track(connection)
        if grant is not None:
            live.track_visitor(grant[0], connection, grant[1])
        try:
            await serve(connection, subscription, dialog_id=dialog_id, since=since,
                        replay=replay, on_frame=on_frame, skip_types=skip_types)
        finally:
            live.untrack(connection)
            if grant is not None:
                live.untrack_visitor(grant[0], connection)
    finally:
        live.ws_limits.release(dialog_id)


async def _door(websocket: WebSocket, checks: Callable[[Services], Awaitable[Serve]]) -> None:
    """Accept, run the door's checks, then serve; a refusal becomes its close code."""
    await websocket.accept()
    services = _services(websocket)
    try:
        if services.live is None:
            raise Refused(CloseCode.TRY_AGAIN_LATER, "live chat is not running")
        run = await checks(services)
        await run()
    except Refused as refused:
        await _close(websocket, refused.code, refused.reason)
    except Exception:
        log.exception("ws: door failed")
        await _close(websocket, CloseCode.INTERNAL_ERROR, "internal error")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason.encode()[:120].decode(errors="ignore"))
    except Exception:  # noqa: BLE001, S110 - the client closed it first: nothing to tell
        pass


# --- the doors ---------------------------------------------------------------------------------


def _visitor_door(widget: bool) -> Callable[[WebSocket], Awaitable[None]]:
    async def door(websocket: WebSocket) -> None:
        async def checks(services: Services) -> Serve:
            dialog_id = _dialog_id(websocket)
            since = _since(websocket)
            site = await _visitor(services, websocket, widget)
            dialog = await _dialog(services, dialog_id, lambda d: visitor_owns(d, site))
            return _serving(websocket, services, dialog, since, sender="user",
                            grant=_grant(site, widget))

        await _door(websocket, checks)

    return door


def _grant(site: SiteCaller, widget: bool) -> tuple[int, VisitorGrant] | None:
    """What to re-check when the assistant changes; None for an account-level token."""
    if site.assistant_id is None:
        return None
    if widget:
        return site.assistant_id, VisitorGrant(via_token=False)
    return site.assistant_id, VisitorGrant(True, site.widget_version, site.domains_hash)


async def operator_dialog_door(websocket: WebSocket) -> None:
    async def checks(services: Services) -> Serve:
        dialog_id = _dialog_id(websocket)
        since = _since(websocket)
        user = await _user(services, websocket.query_params.get("token"))
        dialog = await _dialog(services, dialog_id, lambda d: user_may_act(d, user))
        return _serving(websocket, services, dialog, since, sender="manager", author=user)

    await _door(websocket, checks)


async def operator_feed_door(websocket: WebSocket) -> None:
    async def checks(services: Services) -> Serve:
        user = await _user(services, websocket.query_params.get("token"))
        return functools.partial(_serve_feed, websocket, services, user.id)

    await _door(websocket, checks)


async def _serve_feed(websocket: WebSocket, services: Services, user_id: int) -> None:
    live = services.live_system
    await live.operator_connected(user_id)
    beats = asyncio.get_running_loop().create_task(
        _report_alive(live, user_id, services.settings.operator_heartbeat_interval_seconds))
    try:
        await _run(websocket, services, None, owner_channel(user_id), None, None, None,
                   services.settings.ws_outbound_queue)
    finally:
        beats.cancel()
        await live.operator_disconnected(user_id)


async def _report_alive(live: Any, user_id: int, interval_secs: float) -> None:
    """While the feed is open (the socket answers our pings or it is closed for silence), the
    operator counts as online: the socket's liveness is their heartbeat."""
    while True:
        await asyncio.sleep(interval_secs)
        live.operator_alive(user_id)


def routes() -> list[WebSocketRoute]:
    return [
        WebSocketRoute("/ws/site/dialogs/{dialog_id}", _visitor_door(widget=False)),
        WebSocketRoute("/ws/widget/dialogs/{dialog_id}", _visitor_door(widget=True)),
        WebSocketRoute("/ws/dialogs/{dialog_id}", operator_dialog_door),
        WebSocketRoute("/ws/operator", operator_feed_door),
        WebSocketRoute("/ws/dialogs", operator_feed_door),
    ]
