"""The answer engine: knowledge + prompt + billing + LLM (or the offline responder).

Two halves, so a dialog actor can prepare in its own thread and stream on the event loop
(DESIGN.md §4):

- `prepare()` (blocking): loads the assistant, retrieves knowledge, assembles the prompt,
  decides LLM or offline, and debits the channel's price BEFORE anything is generated (402
  when the balance is short; nothing is sent to a model then).
- `stream()` (async): yields the answer's text deltas. A cancelled or failed answer is
  refunded exactly once; after a cancel no further text is yielded.

With no key at all the offline responder quotes the knowledge base; its answers cost nothing
(no model ran), so they are not charged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Sequence

from anyio import from_thread, to_thread
from sqlalchemy.orm import Session

from server.ai.cancel import CancelToken
from server.ai.key_pool import PoolKey
from server.ai.llm import LlmGateway
from server.ai.llm_errors import LlmError, NoKeyAvailable
from server.ai.offline import offline_answer
from server.ai.prompts import PromptLimits, Turn, build_messages
from server.ai.retrieval import Embedder, Snippet, record_snippet_usage, retrieve
from server.errors import not_found
from server.store import assistants as assistant_store
from server.store import billing as billing_store
from server.store.assistants import AssistantRecord
from server.store.billing import Charge
from server.store.db import Database

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
OFFLINE_CHUNK_WORDS = 4


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelProfile:
    """Per-channel knobs of spec §9.1."""

    name: str
    service_type: str | None
    top_k: int
    knowledge_tokens: int
    history_turns: int
    temperature: float
    max_tokens: int = 1000


WIDGET = ChannelProfile("widget", "widget_message", 4, 1200, 20, 0.9)
TELEGRAM = ChannelProfile("telegram", "bot_message", 5, 1500, 0, 0.9)
DASHBOARD = ChannelProfile("dashboard", "ai_message", 5, 1200, 6, 0.2)


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerRequest:
    owner_id: int
    assistant_id: int | None
    question: str
    history: tuple[Turn, ...] = ()
    channel: ChannelProfile = DASHBOARD
    related_id: int | None = None  # the visitor message being answered, for the ledger
    charge: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedAnswer:
    request: AnswerRequest
    model: str
    messages: tuple[dict[str, str], ...]
    snippets: tuple[Snippet, ...]
    offline_text: str | None  # set: answer offline with this text
    charge: Charge | None
    # The AI key reserved for the first attempt (the stream gives it back if never used).
    reserved_key: PoolKey | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def is_offline(self) -> bool:
        return self.offline_text is not None


@dataclasses.dataclass(slots=True)
class AnswerOutcome:
    """What a finished stream did: completed, cancelled or failed (text so far kept)."""

    status: str = "pending"
    text: str = ""
    error: str | None = None
    refunded: bool = False
    offline: bool = False  # answered by the offline responder (nothing to charge)


class AnswerEngine:
    def __init__(self, db: Database, gateway: LlmGateway) -> None:
        self._db = db
        self.gateway = gateway

    # -- the blocking half ---------------------------------------------------------------

    def prepare(self, request: AnswerRequest, *, embedder: Embedder | None = None) -> PreparedAnswer:
        """Blocking. ONE write transaction, kept short: a refused charge (402) also undoes the
        usage counters, no network call (embeddings) ever runs while it holds the lock, and
        the AI key is reserved in it too (last, so a key row's lock is held only until the
        commit), so that the stream starts without another trip to the store."""
        profile = request.channel
        embedder = embedder or self._embedder(request)
        snippets = None
        if embedder is not None:  # the embeddings call runs outside the write transaction
            with self._db.read() as session:
                assistant = self._assistant(session, request)
                snippets = self._retrieve(session, request, embedder, track_usage=False)
        with self._db.write() as session:
            if snippets is None:
                assistant = self._assistant(session, request)
                snippets = self._retrieve(session, request, None, track_usage=True)
            else:
                record_snippet_usage(session, request.owner_id, snippets)
            model = assistant.ai_model if assistant else DEFAULT_MODEL
            pool = self.gateway.pool
            offline_text = None
            if not pool.has_any_key_in(session):
                fallback = assistant.fallback_text if assistant else None
                offline_text = offline_answer(request.question, snippets, fallback)
            charge = None
            if offline_text is None and request.charge and profile.service_type is not None:
                charge = billing_store.charge(
                    session, request.owner_id, profile.service_type, related_id=request.related_id
                )
            # None while keys exist but none may serve now: the stream then answers offline.
            key = pool.acquire_in(session, model) if offline_text is None else None
        messages = build_messages(
            assistant_prompt=assistant.system_prompt if assistant else None,
            history=request.history,
            question=request.question,
            snippets=snippets,
            limits=PromptLimits(
                history_turns=profile.history_turns, knowledge_tokens=profile.knowledge_tokens
            ),
        )
        return PreparedAnswer(
            request=request,
            model=model,
            messages=tuple(messages),
            snippets=tuple(snippets),
            offline_text=offline_text,
            charge=charge,
            reserved_key=key,
        )

    @staticmethod
    def _assistant(session: Session, request: AnswerRequest) -> AssistantRecord | None:
        if request.assistant_id is None:
            return None
        assistant = assistant_store.get_assistant(session, request.assistant_id)
        if assistant is None or assistant.user_id != request.owner_id:
            raise not_found("Assistant not found")
        return assistant

    @staticmethod
    def _retrieve(session: Session, request: AnswerRequest, embedder: Embedder | None,
                  *, track_usage: bool) -> list[Snippet]:
        return retrieve(
            session,
            owner_id=request.owner_id,
            assistant_id=request.assistant_id,
            question=request.question,
            top_k=request.channel.top_k,
            token_budget=request.channel.knowledge_tokens,
            embedder=embedder,
            track_usage=track_usage,
        )

    def _embedder(self, request: AnswerRequest) -> Embedder | None:
        """Embedding re-ranking when EMBEDDINGS_MODEL is set. It calls the async gateway
        from the worker thread `prepare_async` runs in; elsewhere (no event loop to borrow)
        retrieval keeps the lexical order."""
        if not self.gateway.settings.embeddings_model:
            return None

        def embed(texts: Sequence[str]) -> list[list[float]]:
            call = functools.partial(
                self.gateway.embed, list(texts),
                user_id=request.owner_id, assistant_id=request.assistant_id,
            )
            return from_thread.run(call)

        return embed

    # -- the async half -------------------------------------------------------------------

    async def prepare_async(self, request: AnswerRequest) -> PreparedAnswer:
        return await to_thread.run_sync(self.prepare, request)

    async def stream(
        self, prepared: PreparedAnswer, outcome: AnswerOutcome, cancel: CancelToken | None = None
    ) -> AsyncIterator[str]:
        """Text deltas of the answer; `outcome` says how it ended once iteration stops."""
        parts: list[str] = []
        outcome.offline = prepared.is_offline
        try:
            source = (
                _offline_deltas(prepared.offline_text, cancel)
                if prepared.offline_text is not None
                else self._llm_deltas(prepared, outcome, cancel)
            )
            async with contextlib.aclosing(source) as deltas:
                async for delta in deltas:
                    if cancel is not None and cancel.is_cancelled:
                        break
                    parts.append(delta)
                    yield delta
            cancelled = cancel is not None and cancel.is_cancelled
            outcome.status = "cancelled" if cancelled else "completed"
        except LlmError as exc:
            outcome.status, outcome.error = "failed", str(exc)
            log.warning("answer failed", extra={"owner_id": prepared.request.owner_id,
                                                "error": str(exc)})
        except BaseException:
            outcome.status = "cancelled"  # the consumer went away
            raise
        finally:
            outcome.text = "".join(parts)
            unearned = outcome.status != "completed" or outcome.offline
            if unearned and prepared.charge is not None:
                outcome.refunded = await to_thread.run_sync(
                    self._refund, prepared.charge, outcome.error or outcome.status
                )

    def _refund(self, paid: Charge, reason: str) -> bool:
        with self._db.write() as session:
            return billing_store.refund(session, paid, reason)

    async def _llm_deltas(
        self, prepared: PreparedAnswer, outcome: AnswerOutcome, cancel: CancelToken | None
    ) -> AsyncIterator[str]:
        request = prepared.request
        stream = self.gateway.stream_chat(
            prepared.messages,
            model=prepared.model,
            user_id=request.owner_id,
            assistant_id=request.assistant_id,
            temperature=request.channel.temperature,
            max_tokens=request.channel.max_tokens,
            cancel=cancel,
            reserved_key=prepared.reserved_key,
        )
        try:
            async with stream:
                async for delta in stream:
                    yield delta
        except NoKeyAvailable:
            # Keys exist but none can serve now (all rested or full): quote the knowledge
            # base rather than leave the visitor without an answer (and do not charge it).
            outcome.offline = True
            text = offline_answer(request.question, prepared.snippets)
            async for delta in _offline_deltas(text, cancel):
                yield delta

    async def answer(
        self, request: AnswerRequest, cancel: CancelToken | None = None
    ) -> tuple[PreparedAnswer, AnswerOutcome]:
        """Prepare and consume the whole stream (for callers that need no deltas)."""
        prepared = await self.prepare_async(request)
        outcome = AnswerOutcome()
        async for _delta in self.stream(prepared, outcome, cancel):
            pass
        return prepared, outcome


async def _offline_deltas(text: str, cancel: CancelToken | None) -> AsyncIterator[str]:
    words = text.split(" ")
    for start in range(0, len(words), OFFLINE_CHUNK_WORDS):
        if cancel is not None and cancel.is_cancelled:
            return
        piece = " ".join(words[start : start + OFFLINE_CHUNK_WORDS])
        yield piece if start + OFFLINE_CHUNK_WORDS >= len(words) else piece + " "

