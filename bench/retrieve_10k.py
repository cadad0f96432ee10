"""Latency of `retrieve()` over a knowledge base of 10,000 chunks.

    .venv/bin/python bench/retrieve_10k.py [--corpus zipf|narrow] [--chunks 10000]
                                           [--questions 300] [--database-url URL]

Seeds one owner and assistant with synthetic chunks (~120 words each) into a fresh migrated
database (a temporary SQLite file unless --database-url names a SCRATCH database), then times
`retrieve()` end to end in its own write transaction (search of documents and Q&A with the
tenant-global fallbacks, diversity, packing, usage counters, commit).

Corpora: `zipf` draws words from a 20,000-word vocabulary with Zipf's law (like real text:
most words rare, a few very common); `narrow` uses a 50-word vocabulary, so every query word
is in most chunks -- the worst case for any ranking. Questions are 5 words of a random chunk.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from server.ai.retrieval import retrieve
from server.store import knowledge as knowledge_store
from server.store.db import Database
from server.store.knowledge import ChunkIn
from server.store.models import Assistant, Document, User

CHUNKS_PER_DOCUMENT = 100
NARROW_WORDS = (
    "delivery order parcel courier warehouse refund return warranty repair tent backpack jacket "
    "payment card invoice customer support phone email store opening hours weekend discount "
    "club points gift certificate size chart measure chest waist rental deposit stove sleeping "
    "bag membrane waterproof wash detergent zipper seam pole workshop price business days free"
).split()


def seed_owner(database: Database) -> tuple[int, int]:
    with database.write() as session:
        user = User(email=f"bench-{time.time_ns()}@example.com", hashed_password="-")
        session.add(user)
        session.flush()
        assistant = Assistant(user_id=user.id, name="bench")
        session.add(assistant)
        session.flush()
        return user.id, assistant.id


def vocabulary(corpus: str, rng: random.Random) -> tuple[list[str], list[float]]:
    if corpus == "narrow":
        return list(NARROW_WORDS), [1.0] * len(NARROW_WORDS)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(4, 10))) for _ in range(25_000)})
    rng.shuffle(words)
    words = words[:20_000]
    return words, [1 / (rank + 1) ** 1.07 for rank in range(len(words))]


def seed(
    database: Database, corpus: str, chunks: int, rng: random.Random
) -> tuple[int, int, list[str]]:
    owner_id, assistant_id = seed_owner(database)
    words, weights = vocabulary(corpus, rng)
    texts: list[str] = []
    with database.write() as session:
        for start in range(0, chunks, CHUNKS_PER_DOCUMENT):
            document = Document(user_id=owner_id, filename=f"bench-{start}.txt")
            session.add(document)
            session.flush()
            batch = []
            for index in range(min(CHUNKS_PER_DOCUMENT, chunks - start)):
                text = " ".join(rng.choices(words, weights=weights, k=120)) + "."
                texts.append(text)
                digest = hashlib.sha256(text.encode()).hexdigest()
                batch.append(ChunkIn(index, text, digest, len(text) // 4))
            knowledge_store.replace_chunks_for(
                session,
                owner_id=owner_id,
                chunks=batch,
                assistant_id=assistant_id,
                doc_id=document.id,
            )
    return owner_id, assistant_id, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["zipf", "narrow"], default="zipf")
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    rng = random.Random(7)

    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        database = Database(url)
        database.migrate()
        owner_id, assistant_id, texts = seed(database, args.corpus, args.chunks, rng)
        questions = [" ".join(rng.sample(rng.choice(texts).split(), 5)) for _ in range(50)]
        timings: list[float] = []
        found = 0
        for n in range(args.questions):
            started = time.perf_counter()
            with database.write() as session:
                snippets = retrieve(
                    session,
                    owner_id=owner_id,
                    assistant_id=assistant_id,
                    question=questions[n % 50],
                )
            timings.append((time.perf_counter() - started) * 1000)
            found += bool(snippets)
        database.dispose()

    timings.sort()
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(
        f"retrieve(): {args.chunks} chunks, corpus {args.corpus}, {backend},"
        f" {args.questions} questions (50 distinct), {found} with snippets"
    )
    print(f"p50 {statistics.median(timings):.1f} ms   p99 {p99:.1f} ms   max {timings[-1]:.1f} ms")


if __name__ == "__main__":
    main()
