"""The landing-page sales chat (spec §4.8 and `POST /api/ai/chat` of §5.B).

A visitor of the platform's own marketing site chats with a sales assistant. The prompt asks
the model for JSON `{message, buttons}`; anything else is shown as plain text. When no LLM is
configured or every key fails, keyword-matched canned answers keep the chat useful. Each
exchange is mirrored into a `landing` dialog owned by the first admin (guest = session id), so
the team sees these conversations beside the others.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import orjson
from anyio import to_thread

from server.ai.llm import LlmGateway
from server.ai.llm_errors import LlmError
from server.landing_sessions import LandingSession, SessionStore
from server.store import dialogs as dialog_store
from server.store.db import Database

if TYPE_CHECKING:
    from server.live import LiveSystem

log = logging.getLogger(__name__)

MODEL = "gpt-4o-mini"
TEMPERATURE = 0.7
MAX_TOKENS = 800
HISTORY_TURNS = 10
JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

SALES_PROMPT = (
    "You are the sales assistant of ReplyX, a self-hosted AI customer-support platform: "
    "businesses create AI assistants, teach them with documents, web pages and Q&A, and put "
    "them on their web site (chat widget) and in Telegram bots; a human operator can take "
    "over any conversation live. Answer questions about the product briefly and honestly, "
    "in the visitor's language. Reply ONLY with a JSON object "
    '{"message": "<your answer>", "buttons": [{"label": "...", "url": "..."}] or null}. '
    'Offer at most three buttons, chosen from: {"label": "Start free", "url": "/register"}, '
    '{"label": "Documentation", "url": "/docs"}, {"label": "Talk to a human", "action": '
    '"contact"}.'
)

CANNED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("price", "cost", "plan", "цен", "стоим", "тариф"),
     "ReplyX charges per AI answer from your prepaid balance; there is no monthly fee. "
     "Register to see the current prices in your dashboard."),
    (("telegram", "bot", "бот", "телеграм"),
     "Connect a Telegram bot in the dashboard with its token: the assistant answers there "
     "too, and operators can take over from the same console."),
    (("widget", "site", "website", "виджет", "сайт"),
     "Add the chat widget to your site with one script tag from the assistant's embed code."),
    (("human", "operator", "person", "contact", "оператор", "человек", "связ"),
     "Leave your e-mail here and our team will get back to you shortly."),
)
CANNED_DEFAULT = (
    "ReplyX answers your customers with AI trained on your own documents, on your site and "
    "in Telegram, and lets your team take over any chat live. Want to try it?"
)
DEFAULT_BUTTONS = [{"label": "Start free", "url": "/register"}]


def canned_answer(message: str) -> str:
    lowered = message.lower()
    for keywords, answer in CANNED:
        if any(keyword in lowered for keyword in keywords):
            return answer
    return CANNED_DEFAULT


def _clean_buttons(raw: Any) -> list[dict[str, str]] | None:
    if not isinstance(raw, list):
        return None
    buttons = []
    for item in raw[:3]:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            continue
        button = {"label": item["label"][:60]}
        for key in ("url", "action"):
            if isinstance(item.get(key), str):
                button[key] = item[key][:300]
        if len(button) == 2:
            buttons.append(button)
    return buttons or None


def parse_reply(text: str) -> tuple[str, list[dict[str, str]] | None]:
    """`{message, buttons}` out of the model's text; plain text when it is not JSON."""
    match = JSON_OBJECT.search(text)
    if match:
        try:
            data = orjson.loads(match.group(0))
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"]:
            return data["message"].strip(), _clean_buttons(data.get("buttons"))
    return text.strip(), None


def _landing_dialog(db: Database, session_id: str) -> int | None:
    with db.write() as session:
        admin_id = dialog_store.first_admin_id(session)
        if admin_id is None:
            return None  # nobody to show it to yet
        return dialog_store.get_or_create_guest_dialog(session, admin_id, session_id, "landing")


async def _mirror(live: LiveSystem, db: Database, session_id: str, question: str,
                  answer: str) -> None:
    """The exchange, as the admin sees it in their dialogs: written through the dialog's actor
    (its single writer), so an admin watching it live gets the messages with their seq."""
    dialog_id = await to_thread.run_sync(_landing_dialog, db, session_id)
    if dialog_id is None:
        return
    await live.post(dialog_id, sender="user", text=question, run_ai=False)
    await live.post(dialog_id, sender="assistant", text=answer, run_ai=False)


async def answer_landing_chat(
    sessions: SessionStore, llm: LlmGateway, db: Database, live: LiveSystem, session_id: str,
    message: str,
) -> dict[str, Any]:
    session = await sessions.get(session_id) or LandingSession.new(session_id)
    history = session.messages[-HISTORY_TURNS:]
    chat = [{"role": "system", "content": SALES_PROMPT}, *history,
            {"role": "user", "content": message}]
    source = "llm"
    buttons: list[dict[str, str]] | None
    if await llm.has_any_key_async():
        try:
            reply = await llm.complete_chat(
                chat, model=MODEL, temperature=TEMPERATURE, max_tokens=MAX_TOKENS
            )
            text, buttons = parse_reply(reply)
        except LlmError as exc:
            log.warning("landing chat fell back to canned answers: %s", exc)
            text, buttons, source = canned_answer(message), DEFAULT_BUTTONS, "fallback"
    else:
        text, buttons, source = canned_answer(message), DEFAULT_BUTTONS, "offline"
    session.add_turn("user", message)
    session.add_turn("assistant", text)
    await sessions.put(session)
    await _mirror(live, db, session_id, message, text)
    return {"message": text, "buttons": buttons, "session_id": session_id, "source": source}
