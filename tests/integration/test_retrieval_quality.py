"""Retrieval quality on a small fixed corpus (tests/data/retrieval_corpus.json): hit@3.

For each question, hit@3 counts whether the chunk written to answer it is among the first
three snippets retrieved. The number is printed (`pytest -s`) and must stay above a floor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.ai.ingest import index_text
from server.ai.retrieval import retrieve
from server.context import Services
from server.store.models import Assistant, Document, UserKnowledge

CORPUS = json.loads((Path(__file__).parent.parent / "data" / "retrieval_corpus.json").read_text())
HIT_AT_3_FLOOR = 0.8


def load_corpus(services: Services, owner_id: int) -> tuple[int, dict[int, str]]:
    """Index every corpus chunk as its own knowledge entry; (assistant id, entry id → name)."""
    names: dict[int, str] = {}
    with services.db.write() as session:
        assistant = Assistant(user_id=owner_id, name="North Wind")
        session.add(assistant)
        session.flush()
        for name, content in CORPUS["chunks"].items():
            document = Document(user_id=owner_id, filename=f"{name}.txt", size=len(content))
            session.add(document)
            session.flush()
            entry = UserKnowledge(
                user_id=owner_id, assistant_id=assistant.id, doc_id=document.id, content=content
            )
            session.add(entry)
            session.flush()
            index_text(
                session,
                owner_id=owner_id,
                text=content,
                assistant_id=assistant.id,
                doc_id=document.id,
                knowledge_id=entry.id,
            )
            names[entry.id] = name
        return assistant.id, names


def test_hit_at_3_on_the_fixed_corpus(
    services: Services, make_user: Callable[..., Any], db_url: str
) -> None:
    owner = make_user()
    assistant_id, names = load_corpus(services, owner.id)
    hits = 0
    misses: list[str] = []
    for question, expected in CORPUS["questions"]:
        with services.db.read() as session:
            snippets = retrieve(
                session,
                owner_id=owner.id,
                assistant_id=assistant_id,
                question=question,
                top_k=3,
                track_usage=False,
            )
        found = [names.get(snippet.knowledge_id or -1, "?") for snippet in snippets[:3]]
        if expected in found:
            hits += 1
        else:
            misses.append(f"{question!r}: expected {expected}, got {found}")
    total = len(CORPUS["questions"])
    hit_at_3 = hits / total
    database = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    print(f"\nretrieval hit@3 on {database}: {hits}/{total} = {hit_at_3:.2f}")
    for miss in misses:
        print("  miss:", miss)
    assert hit_at_3 >= HIT_AT_3_FLOOR, misses
