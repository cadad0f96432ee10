"""Engine overhead per answer at 10,000 chunks, with a fake LLM that answers instantly.

    .venv/bin/python bench/engine_overhead.py [--answers 300] [--chunks 10000]
                                              [--database-url URL]

Seeds one tenant (balance, prices, one assistant, 10,000 knowledge chunks) into a fresh
migrated database (a temporary SQLite file unless --database-url names a SCRATCH database),
starts the fake OpenAI-compatible server on 127.0.0.1 and times, per answer:

- `prepare`   — assistant lookup, retrieval, prompt assembly, the balance debit + ledger row;
- `stream`    — key pick + reservation, the HTTP round trip to the fake, the usage row;
- `answer`    — both, i.e. everything the engine does for one answer;
- `llm only`  — the same streamed request sent with the bare `openai` SDK: no engine, no key
                pool, no bookkeeping — just the model's round trip (the baseline);
- `overhead`  — answer minus the median `llm only`: what the engine itself costs per answer
                (retrieval, prompt, debit, key pick and reservation, usage row).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench.retrieve_10k import seed  # noqa: E402
from fakes.openai_server import FakeOpenAI, reply  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from server.ai.engine import WIDGET, AnswerEngine, AnswerOutcome, AnswerRequest  # noqa: E402
from server.ai.llm import LlmGateway  # noqa: E402
from server.config import Settings  # noqa: E402
from server.store import billing as billing_store  # noqa: E402
from server.store.db import Database  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def fund(database: Database, owner_id: int, answers: int) -> None:
    with database.write() as session:
        billing_store.seed_missing_prices(session)
        billing_store.ensure_balance_row(session, owner_id)
        billing_store.apply_delta(session, owner_id, Decimal(answers * 10))


async def measure(engine: AnswerEngine, bare: AsyncOpenAI, owner_id: int, assistant_id: int,
                  questions: list[str], answers: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"prepare": [], "stream": [], "answer": [], "llm only": []}
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
    with tempfile.TemporaryDirectory() as scratch, FakeOpenAI(default=reply("Fine.", chunks=2)) as fake:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        database = Database(url)
        database.migrate()
        owner_id, assistant_id, texts = seed(database, "zipf", args.chunks, rng)
        fund(database, owner_id, args.answers + 10)
        questions = [" ".join(rng.sample(rng.choice(texts).split(), 6)) + "?" for _ in range(50)]
        settings = replace(Settings.from_env({}), database_url=url, openai_api_key="sk-bench",
                           openai_base_url=fake.base_url)
        gateway = LlmGateway(settings, database)
        engine = AnswerEngine(database, gateway)

        async def run() -> dict[str, list[float]]:
            bare = AsyncOpenAI(api_key="sk-bench", base_url=fake.base_url, max_retries=0)
            try:
                # Warm-up: connection pools, statement caches.
                await measure(engine, bare, owner_id, assistant_id, questions, 10)
                return await measure(engine, bare, owner_id, assistant_id, questions,
                                     args.answers)
            finally:
                await gateway.aclose()
                await bare.close()

        timings = asyncio.run(run())
        database.dispose()

    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    llm_median = statistics.median(timings["llm only"])
    timings["overhead"] = [value - llm_median for value in timings["answer"]]
    print(f"answer engine, {args.chunks} chunks, {backend}, {args.answers} answers, fake LLM on 127.0.0.1")
    print(f"{'part':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name in ("prepare", "stream", "answer", "llm only", "overhead"):
        values = timings[name]
        print(f"{name:<10} {statistics.median(values):>8.2f} {percentile(values, 0.99):>8.2f}"
              f" {max(values):>8.2f}")


if __name__ == "__main__":
    main()
