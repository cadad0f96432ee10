"""The bare ceiling of our stack: a Starlette WebSocket echo served by uvicorn exactly as
`python -m server serve` serves the product (uvloop, httptools, websockets-sansio, no
per-message deflate). `/echo` sends every text frame back; `/health` answers 200.

    .venv/bin/python -m bench.rt_echo_app --port 8765
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.rt_common import raise_nofile


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


async def health(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[WebSocketRoute("/echo", echo), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_nofile()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                ws="websockets-sansio", ws_per_message_deflate=False, log_level="warning",
                access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()
