"""What the full-path scenarios ask of our running server over REST and one probe socket: are
the routes there, and the handoff steps (operator online, request, takeover)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from bench.rt_common import Unavailable
from bench.rt_seed import ORIGIN, SeededDialog

HANDOFF_REQUEST = "/api/dialogs/{dialog_id}/handoff/request"
HANDOFF_TAKEOVER = "/api/dialogs/{dialog_id}/handoff/takeover"
HEARTBEAT = "/api/operator/heartbeat"
HTTP_TIMEOUT_SECS = 30.0
PROBE_TIMEOUT_SECS = 10.0
SETUP_CONCURRENCY = 8


def rest_paths(base_url: str) -> set[str]:
    document = httpx.get(f"{base_url}/openapi.json", timeout=HTTP_TIMEOUT_SECS).json()
    return set(document.get("paths", {}))


def handoff_available(base_url: str) -> bool:
    paths = rest_paths(base_url)
    return {HANDOFF_REQUEST, HANDOFF_TAKEOVER, HEARTBEAT} <= paths


async def probe_socket(url: str, what: str) -> None:
    """Open one socket and wait for the door's `ready` frame; Unavailable if the door is not
    there (or refuses), naming what happened."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECS):
            async with connect(url, compression=None, origin=ORIGIN,  # type: ignore[arg-type]
                               ping_interval=None) as ws:
                async for raw in ws:
                    if orjson.loads(raw).get("type") == "ready":
                        return
    except InvalidStatus as exc:
        raise Unavailable(f"{what}: handshake refused with HTTP "
                          f"{exc.response.status_code} (door not there yet?)") from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__} {exc}") from exc
    raise Unavailable(f"{what}: closed before its ready frame")


def probe_doors(ws_base: str, dialog: SeededDialog, operator: str) -> None:
    asyncio.run(probe_socket(dialog.visitor_url(ws_base), "visitor socket /ws/site/dialogs/{id}"))
    if operator == "feed":
        asyncio.run(probe_socket(dialog.feed_url(ws_base), "operator feed /ws/operator"))
    else:
        asyncio.run(probe_socket(dialog.operator_url(ws_base), "operator socket /ws/dialogs/{id}"))


def _bearer(dialog: SeededDialog) -> dict[str, str]:
    return {"Authorization": f"Bearer {dialog.operator_token}"}


def _check(response: httpx.Response, step: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{step}: HTTP {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


async def go_online(client: httpx.AsyncClient, dialog: SeededDialog, chats: int) -> None:
    response = await client.post(HEARTBEAT, headers=_bearer(dialog),
                                 json={"status": "online", "max_active_chats_web": chats})
    _check(response, "operator heartbeat")


async def request_handoff(client: httpx.AsyncClient, dialog: SeededDialog) -> None:
    path = HANDOFF_REQUEST.format(dialog_id=dialog.id)
    response = await client.post(path, headers=_bearer(dialog),
                                 json={"request_id": str(uuid.uuid4()), "reason": "manual"})
    _check(response, "handoff request")


async def take_over(client: httpx.AsyncClient, dialog: SeededDialog) -> dict[str, Any]:
    path = HANDOFF_TAKEOVER.format(dialog_id=dialog.id)
    return _check(await client.post(path, headers=_bearer(dialog), json={}), "takeover")


async def _take_over_all(base_url: str, dialogs: list[SeededDialog], chats: int) -> None:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    owners = {dialog.owner_id: dialog for dialog in dialogs}

    async with httpx.AsyncClient(base_url=base_url, timeout=HTTP_TIMEOUT_SECS) as client:
        async def online(dialog: SeededDialog) -> None:
            async with gate:
                await go_online(client, dialog, chats)

        async def active(dialog: SeededDialog) -> None:
            async with gate:
                await request_handoff(client, dialog)
                status = await take_over(client, dialog)
            if status.get("status") != "active":
                raise RuntimeError(f"dialog {dialog.id} after takeover: {status}")

        await asyncio.gather(*(online(d) for d in owners.values()))
        await asyncio.gather(*(active(d) for d in dialogs))


def take_over_all(base_url: str, dialogs: list[SeededDialog], chats: int) -> None:
    """Every dialog's owner goes online with room for `chats` chats and takes it over."""
    asyncio.run(_take_over_all(base_url, dialogs, chats))
