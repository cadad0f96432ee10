"""What kind of document a text is, without a model: a keyword count (English and Russian).

Used for the `doc_type` of uploaded documents and of offline (extractive) summaries; with an
LLM the summary asks the model and falls back to this when its answer is not a known label.
"""

from __future__ import annotations

import re

DEFAULT_DOC_TYPE = "document"
# Labels a model may answer with (spec §7.6); anything else is replaced by the keyword guess.
KNOWN_DOC_TYPES = (
    "faq", "pricing", "contacts", "instruction", "regulation", "company_info", DEFAULT_DOC_TYPE,
)
MIN_KEYWORD_HITS = 3

# Word starts (so "price" also counts "prices", "руб" counts "рублей"); order breaks ties.
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "faq": ("faq", "frequently asked", "question", "q:", "вопрос", "частые вопросы"),
    "pricing": ("price", "pricing", "cost", "tariff", "fee", "usd", "eur", "rub", "руб",
                "цен", "стоимост", "тариф", "прайс"),
    "contacts": ("phone", "telephone", "e-mail", "email", "address", "contact", "телефон",
                 "адрес", "контакт", "почта"),
    "instruction": ("step", "instruction", "how to", "click", "install", "guide",
                    "инструкци", "шаг", "нажмите", "установ"),
}
_PATTERNS = {
    kind: re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + ")", re.IGNORECASE)
    for kind, words in _KEYWORDS.items()
}
_CURRENCY = re.compile(r"[$€₽£]")


def classify_text(text: str) -> str:
    """The kind with the most keyword hits (at least MIN_KEYWORD_HITS), else `document`."""
    scores = {kind: len(pattern.findall(text)) for kind, pattern in _PATTERNS.items()}
    scores["pricing"] += len(_CURRENCY.findall(text))
    best = max(scores, key=lambda kind: scores[kind])  # first of equals: dict order
    return best if scores[best] >= MIN_KEYWORD_HITS else DEFAULT_DOC_TYPE


def known_label(answer: str) -> str | None:
    """A model's one-word classification as one of KNOWN_DOC_TYPES, or None."""
    word = answer.strip().strip(".\"'`").lower().replace(" ", "_").replace("-", "_")
    return word if word in KNOWN_DOC_TYPES else None
