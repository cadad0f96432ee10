"""Scenario 2 (visitor socket → dialog actor → commit → bus → operator socket) and our half of
scenario 3 (idle visitor sockets), against `python -m server serve` in a subprocess.

Every dialog is first put in handoff `active` (its owner goes online and takes it over over
REST), so a visitor message is persisted and delivered to the operator and no AI answer is
generated. Without the handoff routes the dialogs stay in AI mode with the offline responder
(no LLM key): then every visitor message also produces an assistant answer, and the table says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.rt_api import handoff_available, probe_doors, take_over_all
from bench.rt_common import PYTHON, ServerProcess, free_port, proc_status, serve
from bench.rt_echo import WARM_UP_SOCKETS, IdleNumbers, measure_idle
from bench.rt_load import REPLYX, Link, LoadSpec, Phase, error_summary, run_load, split
from bench.rt_report import CpuMeter, phase_row
from bench.rt_seed import ORIGIN, Backend, SeededDialog, backend, seed, server_env
from server.store.db import Database
from server.store.models import DialogMessage

ACTIVE_MODE = "handoff active (operator took over; no AI)"
OFFLINE_MODE = "AI mode, offline responder (handoff routes missing)"
MAX_CHATS_PER_OPERATOR = 20  # presence.MAX_WEB_LIMIT: one owner takes over at most this many


@dataclass(frozen=True, slots=True)
class FullPathConfig:
    dialogs: int
    dialogs_per_owner: int
    clients: int
    operator_socket: str  # "dialog" (/ws/dialogs/{id}) or "feed" (/ws/operator)
    phases: list[Phase]
    pg_admin_url: str
    redis_url: str
    extra_env: dict[str, str]


@dataclass
class FullPathNumbers:
    label: str
    rows: list[list[Any]] = field(default_factory=list)
    facts: list[Any] = field(default_factory=list)
    saturation_rate: float | None = None
    steady_p50_ms: float | None = None
    steady_p99_ms: float | None = None


FACT_HEADERS = ("run", "mode", "owners", "dialogs", "sockets", "failed", "sent",
                "persisted (user)", "delivered", "server threads", "server RSS MiB",
                "connect errors")


@contextmanager
def _our_server(chosen: Backend, workdir: Path, sockets: int,
                extra_env: dict[str, str]) -> Iterator[ServerProcess]:
    port = free_port()
    data_dir = workdir / f"data-{chosen.name}-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(chosen, port, data_dir, sockets, extra_env)
    with serve([PYTHON, "-m", "server", "serve"], env, port,
               workdir / f"server-{chosen.name}-{port}.log") as server:
        yield server


def _ws_base(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://", 1)


def _specs(dialogs: list[SeededDialog], ws_base: str, cfg: FullPathConfig) -> list[LoadSpec]:
    """One spec per client process; an owner's dialogs (and feed) stay in one process."""
    by_owner: dict[int, list[SeededDialog]] = {}
    for dialog in dialogs:
        by_owner.setdefault(dialog.owner_id, []).append(dialog)
    specs = []
    for owners in split(list(by_owner.values()), cfg.clients):
        links: list[Link] = []
        receivers: list[str] = []
        for owned in owners:
            if cfg.operator_socket == "feed":
                receivers.append(owned[0].feed_url(ws_base))
            for dialog in owned:
                if cfg.operator_socket != "feed":
                    receivers.append(dialog.operator_url(ws_base))
                links.append(Link(dialog.visitor_url(ws_base), len(receivers) - 1))
        specs.append(LoadSpec(REPLYX, tuple(links), tuple(receivers), origin=ORIGIN))
    return specs


def _user_messages(database_url: str) -> int:
    database = Database(database_url)
    try:
        with database.read() as session:
            return int(session.execute(select(func.count()).select_from(DialogMessage)
                                       .where(DialogMessage.sender == "user")).scalar_one())
    finally:
        database.dispose()


def run_fullpath(backend_name: str, cfg: FullPathConfig, workdir: Path) -> FullPathNumbers:
    per_owner = min(cfg.dialogs_per_owner, MAX_CHATS_PER_OPERATOR)
    owners = math.ceil(cfg.dialogs / per_owner)
    with backend(backend_name, workdir, cfg.pg_admin_url, cfg.redis_url) as chosen:
        numbers = FullPathNumbers(chosen.label)
        dialogs = seed(chosen.database_url, owners, per_owner)[:cfg.dialogs]
        receivers = owners if cfg.operator_socket == "feed" else len(dialogs)
        sockets = len(dialogs) + receivers
        with _our_server(chosen, workdir, sockets, cfg.extra_env) as server:
            probe_doors(_ws_base(server), dialogs[0], cfg.operator_socket)
            mode = OFFLINE_MODE
            if handoff_available(server.base_url):
                take_over_all(server.base_url, dialogs, per_owner)
                mode = ACTIVE_MODE
            specs = _specs(dialogs, _ws_base(server), cfg)
            meter = CpuMeter(server.pid)
            outcome = run_load(specs, cfg.phases, before_phase=meter.start,
                               after_phase=meter.stop)
            status = proc_status(server.pid)
        persisted = _user_messages(chosen.database_url)
    label = f"{chosen.label}, {cfg.operator_socket} sockets"
    for phase, result, cpu in zip(cfg.phases, outcome.phases, meter.used, strict=True):
        numbers.rows.append(phase_row(label, len(dialogs), phase, result, cpu))
        if phase.mode == "saturate":
            numbers.saturation_rate = result.rate
        elif result.latencies_ms:
            ordered = sorted(result.latencies_ms)
            numbers.steady_p50_ms = ordered[len(ordered) // 2]
            numbers.steady_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    numbers.facts = [label, mode, owners, len(dialogs), outcome.opened.opened,
                     outcome.opened.failed, sum(r.sent for r in outcome.phases), persisted,
                     sum(r.delivered for r in outcome.phases), status["Threads"],
                     status["VmRSS"] / 1024, error_summary(outcome.opened.errors)]
    return numbers


# --- scenario 3, our half --------------------------------------------------------------------


def run_idle_ours(sockets: int, per_dialog: int, clients: int, settle_secs: float,
                  cfg: FullPathConfig, workdir: Path) -> IdleNumbers:
    """`sockets` idle visitor sockets, `per_dialog` tabs of one guest per dialog (the door
    allows 50 per dialog), on SQLite + the in-process bus."""
    dialog_count = math.ceil(sockets / per_dialog)
    per_owner = min(cfg.dialogs_per_owner, MAX_CHATS_PER_OPERATOR)
    with backend("sqlite", workdir, cfg.pg_admin_url, cfg.redis_url) as chosen:
        dialogs = seed(chosen.database_url, math.ceil(dialog_count / per_owner),
                       per_owner)[:dialog_count]
        with _our_server(chosen, workdir, sockets + WARM_UP_SOCKETS, cfg.extra_env) as server:
            ws_base = _ws_base(server)
            probe_doors(ws_base, dialogs[0], "dialog")
            urls = [dialogs[n // per_dialog].visitor_url(ws_base) for n in range(sockets)]
            specs = [LoadSpec(REPLYX, tuple(Link(url) for url in part), origin=ORIGIN)
                     for part in split(urls, clients)]
            warm = [dialogs[n % len(dialogs)].visitor_url(ws_base)
                    for n in range(WARM_UP_SOCKETS)]
            warm_up = [LoadSpec(REPLYX, tuple(Link(url) for url in warm), origin=ORIGIN)]
            return measure_idle(f"ours: visitor sockets, {per_dialog}/dialog", server.pid,
                                specs, warm_up, settle_secs)
