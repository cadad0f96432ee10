"""The automatic handoff detector of spec §8.3: a table of English and Russian phrases."""

from __future__ import annotations

import pytest

from server.actors.handoff_detector import THRESHOLD, detect

EXPLICIT_REQUESTS = [
    "I want to talk to a real person",
    "I need a human",
    "customer service please",
    "Can I speak to a person?",
    "connect me with an operator",
    "operator",
    "Agent",
    "let me talk to your manager",
    "is there a live agent?",
    "I want to speak with a human being",
    "I'd like to file a complaint",
    "please contact customer support for me",
    "I need help urgently",
    "you don't understand me",
    "позовите оператора",
    "соедините с менеджером",
    "соедините меня с живым человеком",
    "хочу поговорить с менеджером",
    "Оператор!",
    "человек",
    "дайте мне специалиста",
    "мне нужен живой человек",
    "переключите на оператора пожалуйста",
    "хочу написать жалобу",
    "свяжите меня со службой поддержки",
    "я хочу общаться не с ботом",
    "Я недоволен обслуживанием",
    "срочно нужна помощь",
    "бот не понимает что я пишу",
    "у меня серьёзная проблема с заказом",
]

EXCLUDED = [
    "what is the ternary operator in python",
    "how do logical operators work?",
    "is there a bitwise operator in SQL?",
    "the LIKE operator returns nothing",
    "what is an operator",
    "my task manager is frozen",
    "which package manager do you use",
    "support for PDF files?",
    "does it support older versions?",
    "human anatomy books",
    "логический оператор в SQL",
    "что такое оператор",
    "тернарный оператор в питоне",
    "оператор if не работает",
    "какой мобильный оператор лучше",
    "диспетчер задач завис",
    "поддержка формата pdf есть?",
    "организм человека",
]

NON_TRIGGERS = [
    "help me choose a tent",
    "I have a problem with sizes",
    "help",
    "problem",
    "I am a manager at a school",
    "how much is delivery?",
    "помогите выбрать палатку",
    "у меня проблема с размером",
    "нужна палатка на двух человек",
    "я менеджер проекта, нужна палатка",
    "ты не бот?",
    "агент",
    "туроператор спрашивает про визу",
]


@pytest.mark.parametrize("text", EXPLICIT_REQUESTS)
def test_explicit_request_triggers_a_keyword_handoff(text: str) -> None:
    detection = detect(text)
    assert detection.should_handoff, detection
    assert detection.reason == "keyword"
    assert detection.score >= THRESHOLD
    assert detection.matched_patterns


@pytest.mark.parametrize("text", EXCLUDED)
def test_excluded_sense_never_triggers(text: str) -> None:
    detection = detect(text)
    assert not detection.should_handoff, detection
    assert detection.reason == "excluded_pattern"
    assert detection.excluded_patterns


@pytest.mark.parametrize("text", NON_TRIGGERS)
def test_ordinary_words_do_not_trigger(text: str) -> None:
    detection = detect(text)
    assert not detection.should_handoff, detection
    assert detection.reason == "below_threshold"
    assert detection.score < THRESHOLD


def test_phrase_table_is_large_enough() -> None:
    assert len(EXPLICIT_REQUESTS) + len(EXCLUDED) + len(NON_TRIGGERS) >= 40


@pytest.mark.parametrize(
    "ai_text",
    [
        "I'm sorry, I can't help with that.",
        "I don't have enough information to answer.",
        "Please contact our support team for this.",
        "I’m not sure about that.",
        "This is a special case, I recommend contacting a manager.",
        "К сожалению, я не могу ответить на этот вопрос.",
        "У меня недостаточно информации об этом.",
        "Обратитесь в службу поддержки.",
        "Это особый случай.",
    ],
)
def test_ai_fallback_answer_triggers_a_fallback_handoff(ai_text: str) -> None:
    detection = detect("what about the warranty?", ai_text)
    assert detection.should_handoff, detection
    assert detection.ai_fallback
    assert detection.reason == "fallback"
    assert detection.score == pytest.approx(0.8)


def test_confident_ai_answer_adds_nothing() -> None:
    detection = detect("what about the warranty?", "The warranty is two years.")
    assert not detection.should_handoff
    assert not detection.ai_fallback
    assert detection.score == 0.0


def test_fallback_wins_the_reason_over_keywords() -> None:
    detection = detect("I need a human", "I cannot help with that")
    assert detection.reason == "fallback"
    assert detection.score == pytest.approx(1.8)


@pytest.mark.parametrize(("count", "expected"), [(0, False), (1, False), (2, True), (5, True)])
def test_two_consecutive_fallbacks_trigger_a_retries_handoff(count: int, expected: bool) -> None:
    detection = detect("ok and the colour?", consecutive_fallbacks=count)
    assert detection.should_handoff is expected
    if expected:
        assert detection.reason == "retries"
        assert detection.score == pytest.approx(0.6)


def test_exclusion_wins_over_ai_fallback_and_retries() -> None:
    detection = detect("what is an operator", "I'm not sure", consecutive_fallbacks=3)
    assert not detection.should_handoff
    assert detection.reason == "excluded_pattern"


def test_weights_add_up_across_patterns() -> None:
    one = detect("customer service please").score
    two = detect("customer service please, this is a serious problem").score
    assert two == pytest.approx(one + 0.7)


def test_serious_problem_alone_crosses_the_threshold_but_problem_does_not() -> None:
    assert detect("this is a serious problem").should_handoff
    assert not detect("this is a problem").should_handoff


def test_detection_is_case_and_yo_insensitive() -> None:
    shouted = detect("СЕРЬЁЗНАЯ ПРОБЛЕМА")
    assert shouted.matched_patterns == detect("серьезная проблема").matched_patterns
    assert shouted.should_handoff
