"""The offline responder quotes the knowledge base, or falls back."""

from __future__ import annotations

import dataclasses

from server.ai.offline import DEFAULT_FALLBACK, INTRO, offline_answer


@dataclasses.dataclass(frozen=True)
class Snip:
    text: str
    doc_type: str | None = None


def test_quotes_the_most_relevant_sentences_and_says_so() -> None:
    snippet = Snip("We are open daily. Delivery to Berlin takes three days. Returns are free.")
    answer = offline_answer("How long does delivery to Berlin take?", [snippet])
    assert answer.startswith(INTRO["en"])
    assert "Delivery to Berlin takes three days." in answer
    assert "Returns are free" not in answer


def test_answers_in_russian_for_a_russian_question() -> None:
    snippet = Snip("Доставка по Москве занимает один день. Оплата картой.")
    answer = offline_answer("Сколько занимает доставка по Москве?", [snippet])
    assert answer.startswith(INTRO["ru"])
    assert "Доставка по Москве занимает один день." in answer


def test_no_matching_snippet_gives_the_assistants_fallback_text() -> None:
    answer = offline_answer("Do you sell boats?", [Snip("Our office is in Riga.")],
                            fallback_text="Please call us.")
    assert answer == "Please call us."


def test_no_snippets_and_no_fallback_gives_the_default_fallback() -> None:
    assert offline_answer("anything?", []) == DEFAULT_FALLBACK["en"]
