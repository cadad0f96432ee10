"""The offline responder: answers from the knowledge base when no LLM key exists at all.

It quotes the sentences of the best-matching snippets that share the most words with the
question and says plainly that it is quoting the knowledge base; with no match it gives the
assistant's configured fallback text. Deterministic and pure, so it is unit-tested as is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from server.ai.prompts import SnippetLike

WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
CYRILLIC = re.compile(r"[\u0400-\u04FF]")
MAX_QUOTE_CHARS = 600
MAX_SNIPPETS = 2

INTRO = {
    "en": "Here is what our knowledge base says (quoted, no AI model is connected):",
    "ru": "Вот что говорится в нашей базе знаний (цитата, ИИ-модель не подключена):",
}
DEFAULT_FALLBACK = {
    "en": "I could not find an answer to that in our knowledge base. "
    "A human operator can help you — just ask for one.",
    "ru": "Я не нашёл ответа на этот вопрос в нашей базе знаний. "
    "Вам может помочь оператор — просто попросите.",
}


def language_of(text: str) -> str:
    return "ru" if CYRILLIC.search(text) else "en"


def _stems(text: str) -> set[str]:
    # Cheap morphology: a 5-letter prefix makes "deliver", "delivery", "delivered" one term.
    return {word[:5] for word in WORD.findall(text.lower()) if len(word) > 2}


def _best_sentences(snippet_text: str, question_stems: set[str]) -> str:
    sentences = [s.strip() for s in SENTENCE_END.split(snippet_text) if s and s.strip()]
    scored = [
        (len(_stems(sentence) & question_stems), index, sentence)
        for index, sentence in enumerate(sentences)
    ]
    relevant = sorted((item for item in scored if item[0] > 0), key=lambda i: (-i[0], i[1]))
    chosen: list[tuple[int, str]] = []
    length = 0
    for _score, index, sentence in relevant:
        if length + len(sentence) > MAX_QUOTE_CHARS and chosen:
            break
        chosen.append((index, sentence[:MAX_QUOTE_CHARS]))
        length += len(sentence)
    if not chosen:
        return snippet_text.strip()[:MAX_QUOTE_CHARS]
    return " ".join(sentence for _index, sentence in sorted(chosen))


def offline_answer(
    question: str, snippets: Sequence[SnippetLike], fallback_text: str | None = None
) -> str:
    language = language_of(question)
    question_stems = _stems(question)
    quotes = [
        _best_sentences(snippet.text, question_stems)
        for snippet in snippets[:MAX_SNIPPETS]
        if snippet.text.strip() and _stems(snippet.text) & question_stems
    ]
    if not quotes:
        return (fallback_text or "").strip() or DEFAULT_FALLBACK[language]
    body = "\n\n".join(f"> {quote}" for quote in quotes)
    return f"{INTRO[language]}\n\n{body}"
