"""Does a visitor want a human? The automatic handoff detector of spec/API.md §8.3, pure.

`detect(visitor_text, ai_text=None, consecutive_fallbacks=0) -> Detection`:
1. Lower-case the visitor text (and fold `ё` to `е`). If any exclusion matches (programming
   senses of "operator", "human" as a biological term, "support for" files/formats/versions,
   task/package/memory managers, mobile/tour operators, definitional questions) there is no
   handoff, reason `excluded_pattern`; the spec makes the exclusion win over the AI signals too.
2. Sum the weights of every matching request pattern (English and Russian).
3. An AI answer that admits it cannot help adds 0.8 (`ai_fallback`).
4. `consecutive_fallbacks >= MAX_CONSECUTIVE_FALLBACKS` adds 0.6 (the spec's never-working
   `fallback_count`, here a real counter kept by the DialogActor).
5. `score >= THRESHOLD` → handoff, reason `fallback`, else `retries`, else `keyword`.

Words that alone mean nothing ("help", "problem", "помогите", "человек" as in "a tent for
4 people") carry no weight; they count only inside a request phrase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THRESHOLD = 0.5
AI_FALLBACK_WEIGHT = 0.8
RETRIES_WEIGHT = 0.6
MAX_CONSECUTIVE_FALLBACKS = 2


@dataclass(frozen=True, slots=True)
class Detection:
    should_handoff: bool
    reason: str  # keyword|fallback|retries on a handoff; excluded_pattern|below_threshold else
    score: float
    matched_patterns: tuple[str, ...] = ()
    excluded_patterns: tuple[str, ...] = ()
    ai_fallback: bool = False


@dataclass(frozen=True, slots=True)
class _Pattern:
    name: str
    regex: re.Pattern[str]
    weight: float = 0.0


def _p(name: str, pattern: str, weight: float = 0.0) -> _Pattern:
    return _Pattern(name, re.compile(pattern), weight)


_LANGS = r"(?:python|питон\w*|sql|c\+\+|c#|си|java|javascript|js|php|go|rust|ruby|bash|excel|1[сc])"
_CALL_RU = (r"(?:позови\w*|зови\w*|соедини\w*|свяжи\w*|связат\w*|переключи\w*|переведи\w*|дайте|дай"
            r"|нужен|нужна|хочу|можно)")
# Only these may stand between the verb and the person ("соедините меня с живым человеком"),
# so "нужна палатка на двух человек" is not a request for a human.
_FILLER_RU = (r"(?:(?:меня|мне|нам|с|со|к|на|пожалуйста|ваш\w*|живо\w*|живым|реальн\w*|настоящ\w*"
              r"|како\w*-нибудь|кого-нибудь|поговорить|связаться|пообщаться)\s+){0,3}")
_HUMAN_RU = r"(?:оператор\w*|человек\w*|менеджер\w*|специалист\w*|сотрудник\w*|консультант\w*)"
_TALK_EN = r"(?:talk|speak|chat)\s+(?:to|with)"
_PERSON_EN = (r"(?:person|human|someone|somebody|representative|agent|operator|manager"
              r"|supervisor|staff)")

EXCLUSIONS: tuple[_Pattern, ...] = (
    _p("en_programming_operator",
       r"\b(?:logical|arithmetic|bitwise|ternary|comparison|assignment|boolean|unary|binary"
       r"|spread|modulo|walrus|conditional|relational|overloaded|increment"
       r"|decrement)\s+operators?\b"),
    _p("en_operator_in_language", rf"\boperators?\s+(?:in|of|for)\s+{_LANGS}\b"),
    _p("en_language_operator", rf"\b{_LANGS}\s+operators?\b"),
    _p("en_keyword_operator",
       r"(?:\b(?:if|while|switch|case|select|join|like|new|delete|sizeof|typeof|instanceof)"
       r"|\bthe\s+['\"`]?(?:in|is|not|and|or|%|\+|\*|==)['\"`]?)\s+operators?\b"),
    _p("en_operator_overloading", r"\boperator\s+(?:overload\w*|precedence|\(\)|\[\])"),
    _p("en_trade_operator",
       r"\b(?:mobile|network|cell|tour|crane|machine|telecom|radio)\s+operators?\b"),
    _p("ru_programming_operator",
       r"\b(?:логическ|арифметическ|побитов|битов|тернарн|условн|сравнени|присваивани|унарн"
       r"|бинарн|циклическ)\w*\s+оператор"),
    _p("ru_operator_in_language", rf"\bоператор\w*\s+(?:в|на|языка|для)\s+{_LANGS}"),
    _p("ru_language_operator", rf"\b{_LANGS}\s+оператор"),
    _p("ru_keyword_operator",
       r"\bоператор\w*\s+['\"`«]?(?:if|while|for|select|switch|case|join|like|return|break"
       r"|goto)\b"),
    _p("ru_telecom_operator",
       r"\b(?:мобильн\w*|сотов\w*)\s+оператор|\bоператор\w*\s+(?:сотовой\s+|мобильной\s+)?связи"),
    _p("en_biological_human",
       r"\bhuman\s+(?:body|anatomy|biology|genome|dna|cells?|nature|resources|hair|skin|error"
       r"|evolution|brain|heart|eye|physiology|species|rights|history)\b|\bhomo\s+sapiens\b"),
    _p("ru_biological_human",
       r"\bчеловеческ\w*\s+(?:тел|организм|анатоми|геном|кож|волос|клетк|мозг|глаз|фактор|природ)"
       r"|\b(?:организм\w*|тел[оау]|анатоми\w*|геном\w*|биологи\w*|эволюци\w*)\s+человека"),
    _p("en_support_for_things",
       r"\bsupports?\s+(?:for\s+)?(?:\w+\s+)?(?:files?|formats?|versions?|pdf|docx?|xlsx?|csv"
       r"|png|jpe?g|images?|videos?|unicode|utf-?8|ios|android|windows|mac|macos|linux)\b"
       r"|\b(?:does|do)\s+(?:it|this|the\s+\w+|your\s+\w+)\s+support\b"),
    _p("ru_support_for_things",
       r"\bподдержк\w*\s+(?:\w+\s+)?(?:формат\w*|файл\w*|верси\w*|pdf|docx?|excel|xlsx?|csv"
       r"|windows|ios|android|mac|linux|unicode)"),
    _p("en_software_manager",
       r"\b(?:task|package|memory|file|password|window|download|display|device|process|session"
       r"|boot|plugin|extension|dependency)\s+managers?\b"),
    _p("ru_software_manager",
       r"\b(?:диспетчер|менеджер)\w*\s+(?:задач|пакет\w*|памят\w*|файл\w*|паролей|загрузок"
       r"|устройств|процесс\w*)|\bпакетн\w+\s+менеджер"),
    _p("en_definition",
       r"\bwhat\s+(?:is|are|does)\s+(?:an?\s+|the\s+)?(?:operator|manager|support|human|agent)s?\b"
       r"|\bhow\s+(?:does|do)\s+(?:an?\s+|the\s+)?operators?\s+work"
       r"|\b(?:define|definition\s+of|meaning\s+of)\s+(?:an?\s+|the\s+)?(?:operator|manager)"),
    _p("ru_definition",
       r"\bчто\s+(?:такое|значит|означает)\s+(?:оператор|менеджер|поддержк|специалист)"
       r"|\bкак\s+работа\w*\s+оператор|\b(?:определение|значение)\s+(?:слова\s+)?(?:оператор"
       r"|менеджер)"),
)

REQUEST_PATTERNS: tuple[_Pattern, ...] = (
    # A message that is nothing but the word is an explicit request.
    _p("bare_request_word",
       r"^\W*(?:оператор\w*|менеджер\w*|человек\w*|живой\s+человек|operator|human|agent"
       r"|real\s+person|live\s+agent)\W*$", 1.0),
    # Russian: operator, live person, manager, specialist, support, urgency, complaints.
    _p("ru_call_a_human", rf"\b{_CALL_RU}\s+{_FILLER_RU}{_HUMAN_RU}", 1.0),
    _p("ru_operator", r"\bоператор\w*", 0.9),
    _p("ru_live_person", r"\b(?:жив\w+|реальн\w+|настоящ\w+)\s+(?:человек\w*|оператор\w*|люд\w*"
       r"|менеджер\w*|специалист\w*|сотрудник\w*)", 1.0),
    _p("ru_with_a_human", r"\b(?:с|со)\s+(?:живым\s+)?человеком", 0.9),
    _p("ru_not_a_bot", r"\bне\s+с\s+(?:бот\w*|робот\w*|машин\w*|ии)\b"
       r"|\b(?:хватит|надоел\w*)\s+(?:\w+\s+)?(?:бот\w*|робот\w*)", 0.8),
    _p("ru_manager", r"\b(?:с|со)\s+(?:вашим\s+)?(?:менеджер|руководител|начальник|начальств)\w*"
       r"|\b(?:менеджер|руководител|начальник)\w*\s+(?:пожалуйста|срочно)", 0.9),
    _p("ru_specialist", r"\b(?:специалист\w*|консультант\w*|эксперт(?:а|у|ом|ы|ов)?)\b", 0.8),
    _p("ru_support_service", r"\b(?:служб\w*\s+поддержк\w*|техподдержк\w*|служб\w*\s+заботы)", 0.9),
    _p("ru_contact_support",
       r"\b(?:связ\w*|соедини\w*|написать|обратиться)\s+(?:\w+\s+)?(?:в|с|со)\s+поддержк\w*", 0.8),
    _p("ru_urgent_help",
       r"\b(?:срочн\w*|серьезн\w*)\s+(?:нужн\w+\s+)?помощ\w*|\bпомогите\s+срочно", 0.8),
    _p("ru_complaint", r"\b(?:жалоб\w*|пожаловаться|претензи\w*)", 0.9),
    _p("ru_dissatisfied",
       r"\bнедовол\w*|\b(?:ужасн\w*|отвратительн\w*|плох\w*)\s+(?:сервис|обслуживани)\w*", 0.8),
    _p("ru_serious_problem", r"\b(?:серьезн\w*|сложн\w*)\s+(?:проблем\w*|ситуаци\w*)", 0.7),
    _p("ru_cannot_solve",
       r"\bне\s+(?:могу|получается|удается|можете)\s+(?:\w+\s+)?"
       r"(?:решить|разобраться|понять)"
       r"|\bвы\s+(?:меня\s+)?не\s+понимаете|\bбот\s+не\s+понимает", 0.8),
    _p("ru_frustration", r"\b(?:уже|в)\s+(?:который|третий|пятый|десятый|несколько)\s+раз"
       r"|\b(?:опять|снова)\s+не\b|\bбесполезн\w*|\bничего\s+не\s+помога\w*", 0.6),
    # English.
    _p("en_need_a_human",
       r"\b(?:need|want|get|give\s+me|connect\s+me\s+(?:to|with))\s+(?:an?\s+|the\s+|your\s+)?"
       r"(?:real\s+|live\s+|actual\s+)?(?:human|operator|agent|representative|person)\b", 1.0),
    _p("en_talk_to_a_person",
       rf"\b{_TALK_EN}\s+(?:an?\s+|the\s+|your\s+|some\s+)?(?:real\s+|live\s+"
       rf"|actual\s+)?{_PERSON_EN}\b", 0.9),
    _p("en_real_person",
       r"\b(?:real|live|actual)\s+(?:person|human|people|agent|operator)\b|\bhuman\s+being\b", 1.0),
    _p("en_operator", r"\boperator\b", 0.9),
    _p("en_not_a_bot", r"\b(?:not\s+(?:a|the)\s+(?:bot|robot|machine)|stop\s+the\s+bot)\b", 0.8),
    _p("en_manager",
       r"\b(?:to|with|get|call|want|need|fetch)\s+(?:your|a|the)\s+(?:manager|supervisor)\b"
       r"|^\W*(?:manager|supervisor)\s+please\b", 0.9),
    _p("en_customer_service", r"\bcustomer\s+(?:service|support|care)\b|\bsupport\s+team\b", 0.9),
    _p("en_contact_support", r"\b(?:contact|reach|call)\s+(?:the\s+|your\s+)?support\b", 0.8),
    _p("en_specialist", r"\b(?:need|want|to|with|consult|ask)\s+(?:a|an|the|your)\s+"
       r"(?:specialist|consultant|expert)\b", 0.8),
    _p("en_urgent_help", r"\burgent(?:ly)?\s+(?:need\s+)?help\b|\bneed\s+help\s+urgently\b", 0.8),
    _p("en_complaint", r"\b(?:complaint|complain|terrible\s+service|unacceptable)\b", 0.9),
    _p("en_serious_problem",
       r"\b(?:serious|complex|complicated)\s+(?:problem|issue|situation)\b", 0.7),
    _p("en_cannot_solve", r"\byou\s+(?:don'?t|do\s+not|can'?t|cannot)\s+(?:understand|help)\b"
       r"|\bthis\s+is\s+not\s+helping\b", 0.8),
    _p("en_frustration",
       r"\b(?:again\s+and\s+again|for\s+the\s+\w+\s+time|useless|already\s+tried)\b", 0.6),
)

AI_FALLBACKS: tuple[_Pattern, ...] = (
    _p("ai_cannot_help_en",
       r"\bi(?:\s+can'?t|\s+cannot|\s+am\s+unable\s+to|'m\s+unable\s+to|\s+am\s+not\s+able\s+to"
       r"|'m\s+not\s+able\s+to)\s+"
       r"(?:help|answer|assist|find|provide)"),
    _p("ai_no_information_en",
       r"\b(?:not\s+enough\s+information|i\s+don'?t\s+(?:have|know)\s+(?:enough\s+)?"
       r"(?:information|the\s+answer|that))"),
    _p("ai_contact_support_en",
       r"\b(?:please\s+contact|recommend\s+contacting|reach\s+out\s+to)\s+(?:our\s+|the\s+|a\s+)?"
       r"(?:support|customer\s+service|specialist|manager|operator|team)"),
    _p("ai_not_sure_en", r"\bi(?:'m|\s+am)\s+not\s+sure\b|\bthis\s+is\s+a\s+special\s+case\b"),
    _p("ai_cannot_help_ru",
       r"\bне\s+могу\s+(?:\w+\s+)?(?:ответить|помочь|найти|подсказать)|\bзатрудняюсь\s+ответить"),
    _p("ai_no_information_ru",
       r"\b(?:недостаточно|нет)\s+(?:\w+\s+)?(?:информации|данных)|\bне\s+(?:знаю|уверен\w*)\b"),
    _p("ai_contact_support_ru",
       r"\b(?:обратитесь|рекомендую\s+обратиться|советую\s+обратиться)\s+(?:в|к)\s+"
       r"(?:\w+\s+)?(?:поддержк|специалист|менеджер|оператор|служб)"),
    _p("ai_special_case_ru", r"\bэто\s+(?:особый|особенный|нестандартный)\s+случай"),
)


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("ё", "е").replace("\u2019", "'").split())


def _matching(patterns: tuple[_Pattern, ...], text: str) -> list[_Pattern]:
    return [p for p in patterns if p.regex.search(text)]


def detect(
    visitor_text: str, ai_text: str | None = None, consecutive_fallbacks: int = 0
) -> Detection:
    text = _normalise(visitor_text)
    excluded = tuple(p.name for p in _matching(EXCLUSIONS, text))
    if excluded:
        return Detection(False, "excluded_pattern", 0.0, excluded_patterns=excluded)

    matched = _matching(REQUEST_PATTERNS, text)
    score = sum((p.weight for p in matched), 0.0)
    ai_fallback = bool(ai_text) and bool(_matching(AI_FALLBACKS, _normalise(ai_text or "")))
    if ai_fallback:
        score += AI_FALLBACK_WEIGHT
    retries = consecutive_fallbacks >= MAX_CONSECUTIVE_FALLBACKS
    if retries:
        score += RETRIES_WEIGHT
    score = round(score, 3)

    should = score >= THRESHOLD
    if not should:
        reason = "below_threshold"
    elif ai_fallback:
        reason = "fallback"
    elif retries:
        reason = "retries"
    else:
        reason = "keyword"
    return Detection(should, reason, score, tuple(p.name for p in matched), (), ai_fallback)
