"""Summaries of a document: `GET /api/documents/{id}/summary` and `POST /api/analyze-document/{id}`.

Shape (spec §4.5): `{summaries: [{chunk, summary, is_overall?}], doc_type}` plus `method`,
which says honestly where the summaries come from:

* `llm`: an LLM key is configured. The text is cut into at most MAX_LLM_GROUPS groups of
  LLM_GROUP_CHARS (the rest is not read); one call per group, one merging call when there
  are several, one classifying call: at most 5 calls. `/summary` stores the result as a
  tenant-global `summary` knowledge entry and returns it from then on (`method: stored`);
  analyze always runs again and stores nothing. A model failure is a 503; nothing is stored.
* `extractive`: no key at all (offline). The leading sentences of each section, quoted
  verbatim, and a keyword-based `doc_type`; never stored (it is cheap and a later key should
  give a real summary).
Not billed, as in the original.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

import anyio

from server.ai.engine import DEFAULT_MODEL
from server.ai.llm_errors import LlmError
from server.context import Services
from server.doc_types import DEFAULT_DOC_TYPE, KNOWN_DOC_TYPES, classify_text, known_label
from server.documents import access_document, document_text
from server.errors import AppError, ErrorCode
from server.knowledge import parsed_summary
from server.store import knowledge_entries as entries

log = logging.getLogger(__name__)

SUMMARY_TEMPERATURE = 0.05
MAX_LLM_GROUPS = 3
LLM_GROUP_CHARS = 40_000
SUMMARY_MAX_TOKENS = 1200
CLASSIFY_SAMPLE_CHARS = 6000
MAX_SECTIONS = 5
MIN_SECTION_CHARS = 1500
LEAD_SENTENCES = 2
LEAD_MAX_CHARS = 400

SUMMARISE_PROMPT = (
    "You extract knowledge for a customer-support assistant. Summarise the document part the "
    "user sends: keep every concrete fact (prices, conditions, contacts, deadlines, steps, "
    "questions and answers), mark uncertain figures as such, and invent nothing. Answer in "
    "the language of the document, as plain text."
)
MERGE_PROMPT = (
    "Merge these summaries of consecutive parts of one document into one overall summary. "
    "Keep every concrete fact; invent nothing. Answer in the language of the summaries."
)
CLASSIFY_PROMPT = (
    "Classify the document. Answer with exactly one word from this list: "
    + ", ".join(KNOWN_DOC_TYPES) + "."
)


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    summaries: list[dict[str, Any]]
    doc_type: str
    method: str  # llm | stored | extractive

    def render(self) -> dict[str, Any]:
        return {"summaries": self.summaries, "doc_type": self.doc_type, "method": self.method}


async def document_summary(services: Services, owner_id: int, doc_id: int) -> Summary:
    stored = await anyio.to_thread.run_sync(_stored_summary, services, owner_id, doc_id)
    if stored is not None:
        return stored
    text = await anyio.to_thread.run_sync(document_text, services, owner_id, doc_id)
    if not await services.llm.has_any_key_async():
        return extractive_summary(text)
    summary = await llm_summary(services, owner_id, text)
    return await anyio.to_thread.run_sync(_store, services, owner_id, doc_id, summary)


async def analyze_document(services: Services, owner_id: int, doc_id: int) -> Summary:
    text = await anyio.to_thread.run_sync(document_text, services, owner_id, doc_id)
    if not await services.llm.has_any_key_async():
        return extractive_summary(text)
    return await llm_summary(services, owner_id, text)


def _stored_summary(services: Services, owner_id: int, doc_id: int) -> Summary | None:
    with services.db.read() as session:
        access_document(session, owner_id, doc_id)
        entry = entries.find_summary(session, owner_id, doc_id)
    if entry is None:
        return None
    items = parsed_summary(entry.content)
    if items is None:
        items = [{"chunk": 1, "summary": entry.content}]
    return Summary(items, entry.doc_type or DEFAULT_DOC_TYPE, "stored")


def _store(services: Services, owner_id: int, doc_id: int, summary: Summary) -> Summary:
    with services.db.write() as session:
        access_document(session, owner_id, doc_id)  # it may have been deleted meanwhile
        if entries.find_summary(session, owner_id, doc_id) is None:  # a concurrent request won
            entries.create_entry(
                session, owner_id, doc_id=doc_id, assistant_id=None,
                content=json.dumps(summary.summaries, ensure_ascii=False),
                type_=entries.SUMMARY, doc_type=summary.doc_type,
            )
    return summary


# --- with a model -------------------------------------------------------------------------------


async def llm_summary(services: Services, owner_id: int, text: str) -> Summary:
    groups = sections(text, MAX_LLM_GROUPS, LLM_GROUP_CHARS, LLM_GROUP_CHARS)
    try:
        parts = [await _ask(services, owner_id, SUMMARISE_PROMPT, group) for group in groups]
        summaries: list[dict[str, Any]] = [
            {"chunk": number, "summary": part} for number, part in enumerate(parts, start=1)
        ]
        if len(parts) > 1:
            overall = await _ask(services, owner_id, MERGE_PROMPT, "\n\n".join(parts))
            summaries.insert(0, {"chunk": 0, "summary": overall, "is_overall": True})
        label = await _ask(services, owner_id, CLASSIFY_PROMPT, text[:CLASSIFY_SAMPLE_CHARS],
                           max_tokens=10)
    except LlmError as exc:
        log.warning("document summary failed", extra={"owner_id": owner_id, "error": str(exc)})
        raise AppError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "The AI service could not summarise the document; please try again later",
        ) from exc
    return Summary(summaries, known_label(label) or classify_text(text), "llm")


async def _ask(
    services: Services, owner_id: int, instruction: str, content: str,
    *, max_tokens: int = SUMMARY_MAX_TOKENS,
) -> str:
    answer = await services.llm.complete_chat(
        [{"role": "system", "content": instruction}, {"role": "user", "content": content}],
        model=DEFAULT_MODEL, user_id=owner_id, temperature=SUMMARY_TEMPERATURE,
        max_tokens=max_tokens,
    )
    if not answer.strip():
        raise LlmError("the model answered with nothing")
    return answer.strip()


# --- without a model (pure) -------------------------------------------------------------------

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def sections(text: str, max_sections: int, min_chars: int, max_chars: int) -> list[str]:
    """Consecutive pieces of about len/max_sections characters (within [min_chars,
    max_chars]), cut between paragraphs, else between sentences, else at a space; at most
    `max_sections`, so text beyond them is left out."""
    size = min(max(-(-len(text) // max_sections), min_chars), max_chars)
    pieces: list[str] = []
    current = ""
    for separator, unit in _units(text, size):
        if current and len(current) + len(separator) + len(unit) > size:
            pieces.append(current)
            current = ""
        current = f"{current}{separator}{unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces[:max_sections]


def _units(text: str, size: int) -> list[tuple[str, str]]:
    """(separator before it, piece) pieces of at most `size` characters."""
    units: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= size:
            units.append(("\n\n", paragraph))
            continue
        separator = "\n\n"
        for sentence in _SENTENCE_END.split(paragraph):
            while len(sentence) > size:
                cut = sentence.rfind(" ", 0, size)
                cut = cut if cut > 0 else size
                units.append((separator, sentence[:cut]))
                sentence, separator = sentence[cut:].strip(), " "
            if sentence:
                units.append((separator, sentence))
                separator = " "
    return units


def lead(text: str, sentences: int = LEAD_SENTENCES, max_chars: int = LEAD_MAX_CHARS) -> str:
    """The first sentences of a text, verbatim, cut at a word with "…" when too long."""
    flat = " ".join(text.split())
    chosen = " ".join(_SENTENCE_END.split(flat)[:sentences])
    if len(chosen) <= max_chars:
        return chosen
    cut = chosen.rfind(" ", 0, max_chars)
    return chosen[: cut if cut > 0 else max_chars] + "…"


def extractive_summary(text: str) -> Summary:
    parts = sections(text, MAX_SECTIONS, MIN_SECTION_CHARS, max(len(text), 1))
    summaries: list[dict[str, Any]] = [
        {"chunk": number, "summary": lead(part)} for number, part in enumerate(parts, start=1)
    ]
    if len(parts) > 1:
        overall = " ".join(lead(part, sentences=1, max_chars=200) for part in parts)
        summaries.insert(0, {"chunk": 0, "summary": overall, "is_overall": True})
    return Summary(summaries, classify_text(text), "extractive")
