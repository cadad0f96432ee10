"""Engine overhead per answer at 10,000 chunks, with a fake LLM that answers instantly.

    .venv/bin/python -m bench.engine_overhead [--answers 300] [--chunks 10000]
                                              [--database-url URL]

Seeds one tenant (balance, prices, one assistant, 10,000 knowledge chunks) into a fresh
migrated database -- a temporary SQLite file, or with `--database-url postgresql://…/any` a
scratch database created on that server for the run and dropped after it (so runs do not pile
chunks into a shared database and skew each other) -- starts the fake OpenAI-compatible
server on 127.0.0.1 and times, per answer:

- `prepare`   — assistant lookup, retrieval, prompt assembly, the balance debit + ledger row;
- `stream`    — the HTTP round trip to the fake through the key pool (the key was reserved
                in prepare; the usage row is queued for the background writer);
- `answer`    — both, i.e. everything the engine does for one answer;
- `llm only`  — the same streamed request sent with the bare `openai` SDK: no engine, no key
                pool, no bookkeeping — just the model's round trip (the baseline);
- `overhead`  — answer minus the median `llm only`: what the engine itself costs per answer
                (retrieval, prompt, debit, key pick and reservation, queuing the usage row);
- `usage row` — after the answer, the wait until the background writer has committed its usage
                row (off the answer's path; awaited before the baseline, so that neither the
                baseline nor the next answer shares the CPU with it).

At the end it checks that every answer left its usage row (the writer is drained on close).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.openai_server import FakeOpenAI, reply
from openai import AsyncOpenAI
from sqlalchemy import create_engine, func, select, text

from bench.retrieve_10k import seed
from server.ai.engine import WIDGET, AnswerEngine, AnswerOutcome, AnswerRequest
from server.ai.llm import LlmGateway
from server.config import Settings
from server.store import billing as billing_store
from server.store.db import Database, normalise_url
from server.store.models import AiTokenUsage

WARM_UP_ANSWERS = 10


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@contextlib.contextmanager
def scratch_url(url: str | None, folder: Path) -> Iterator[str]:
    """A fresh database: a SQLite file in `folder` (or the SQLite URL given), or a new database
    on the given PostgreSQL server, dropped afterwards."""
    if url is None or url.startswith("sqlite"):
        yield url or f"sqlite:///{folder / 'bench.db'}"
        return
    server = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    name = f"replyx_bench_{uuid.uuid4().hex[:10]}"
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield normalise_url(url).rsplit("/", 1)[0] + "/" + name
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def usage_rows(database: Database) -> int:
    with database.read() as session:
        return int(session.execute(select(func.count()).select_from(AiTokenUsage)).scalar_one())


def fund(database: Database, owner_id: int, answers: int) -> None:
    with database.write() as session:
        billing_store.seed_missing_prices(session)
        billing_store.ensure_balance_row(session, owner_id)
        billing_store.apply_delta(session, owner_id, Decimal(answers * 10))


async def measure(engine: AnswerEngine, bare: AsyncOpenAI, owner_id: int, assistant_id: int,
                  questions: list[str], answers: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"prepare": [], "stream": [], "answer": [], "llm only": [],
                                       "usage row": []}
    for n in range(answers):
        request = AnswerRequest(owner_id=owner_id, assistant_id=assistant_id,
                                question=questions[n % len(questions)], channel=WIDGET)
        started = time.perf_counter()
        prepared = await asyncio.to_thread(engine.prepare, request)
        prepared_at = time.perf_counter()
        outcome = AnswerOutcome()
        async for _delta in engine.stream(prepared, outcome):
            pass
        finished = time.perf_counter()
        assert outcome.status == "completed", outcome
        timings["prepare"].append((prepared_at - started) * 1000)
        timings["stream"].append((finished - prepared_at) * 1000)
        timings["answer"].append((finished - started) * 1000)
        # The usage row is written off the answer's path; wait for it here (untimed for the
        # answer) so that neither the baseline nor the next answer shares the CPU with it.
        await engine.gateway.flush_usage()
        timings["usage row"].append((time.perf_counter() - finished) * 1000)
        baseline_started = time.perf_counter()
        stream = await bare.chat.completions.create(
            model=prepared.model, messages=list(prepared.messages), stream=True,
            stream_options={"include_usage": True},
        )
        async for _chunk in stream:
            pass
        timings["llm only"].append((time.perf_counter() - baseline_started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    import random

    rng = random.Random(11)
    with (
        tempfile.TemporaryDirectory() as scratch,
        scratch_url(args.database_url, Path(scratch)) as url,
        FakeOpenAI(default=reply("Fine.", chunks=2)) as fake,
    ):
        database = Database(url)
        database.migrate()
        owner_id, assistant_id, texts = seed(database, "zipf", args.chunks, rng)
        fund(database, owner_id, args.answers + WARM_UP_ANSWERS)
        questions = [" ".join(rng.sample(rng.choice(texts).split(), 6)) + "?" for _ in range(50)]
        settings = replace(Settings.from_env({}), database_url=url, openai_api_key="sk-bench",
                           openai_base_url=fake.base_url)
        gateway = LlmGateway(settings, database)
        engine = AnswerEngine(database, gateway)

        async def run() -> dict[str, list[float]]:
            bare = AsyncOpenAI(api_key="sk-bench", base_url=fake.base_url, max_retries=0)
            try:
                # Warm-up: connection pools, statement caches.
                await measure(engine, bare, owner_id, assistant_id, questions, WARM_UP_ANSWERS)
                return await measure(engine, bare, owner_id, assistant_id, questions,
                                     args.answers)
            finally:
                await gateway.aclose()
                await bare.close()

        timings = asyncio.run(run())
        written = usage_rows(database)
        database.dispose()
        if written != WARM_UP_ANSWERS + args.answers:
            raise SystemExit(f"expected {WARM_UP_ANSWERS + args.answers} usage rows, found {written}")

    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    llm_median = statistics.median(timings["llm only"])
    timings["overhead"] = [value - llm_median for value in timings["answer"]]
    print(f"answer engine, {args.chunks} chunks, {backend}, {args.answers} answers, fake LLM on 127.0.0.1")
    print(f"{'part':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("prepare", "stream", "answer", "llm only", "overhead", "usage row"):
        values = timings[name]
        print(f"{name:<10} {statistics.median(values):>8.2f} {percentile(values, 0.99):>8.2f}"
              f" {max(values):>8.2f}")


if __name__ == "__main__":
    main()
