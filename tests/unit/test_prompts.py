"""Prompt assembly of spec §9.2."""

from __future__ import annotations

import dataclasses

from server.ai.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    NO_KNOWLEDGE,
    PromptLimits,
    Turn,
    build_messages,
)


@dataclasses.dataclass(frozen=True)
class Snip:
    text: str
    doc_type: str | None = None


def test_empty_assistant_prompt_uses_platform_default() -> None:
    messages = build_messages(assistant_prompt="  ", history=[], question="hi", snippets=[])
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(DEFAULT_SYSTEM_PROMPT)


def test_manager_turns_become_assistant_with_name_and_system_rows_are_dropped() -> None:
    history = [
        Turn("user", "where is my order?"),
        Turn("system", "Operator joined"),
        Turn("manager", "Checking now", author_name="Anna"),
        Turn("assistant", "Anything else?"),
    ]
    messages = build_messages(assistant_prompt="Be nice", history=history, question="thanks",
                              snippets=[])
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "assistant", "system", "user"]
    assert messages[2]["content"] == "[Anna, human operator]: Checking now"
    assert all("Operator joined" not in m["content"] for m in messages)
    assert messages[-1] == {"role": "user", "content": "thanks"}


def test_history_is_limited_to_the_most_recent_turns() -> None:
    history = [Turn("user", f"message {i}") for i in range(30)]
    messages = build_messages(assistant_prompt="p", history=history, question="q", snippets=[],
                              limits=PromptLimits(history_turns=5))
    texts = [m["content"] for m in messages if m["role"] == "user"]
    assert texts == [f"message {i}" for i in range(25, 30)] + ["q"]


def test_knowledge_block_is_separated_labelled_and_within_budget() -> None:
    snippets = [Snip("Delivery takes 3 days.", "faq"), Snip("x " * 5000, None), Snip("Late", None)]
    messages = build_messages(assistant_prompt="p", history=[], question="q", snippets=snippets,
                              limits=PromptLimits(knowledge_tokens=300))
    knowledge = messages[-2]["content"]
    assert "[faq] Delivery takes 3 days." in knowledge
    assert "\n---\n" in knowledge
    assert len(knowledge) < 300 * 4 + 600  # budget plus the fixed intro and reminder


def test_no_snippets_says_there_is_no_knowledge() -> None:
    messages = build_messages(assistant_prompt="p", history=[], question="q", snippets=[])
    assert messages[-2] == {"role": "system", "content": NO_KNOWLEDGE}
