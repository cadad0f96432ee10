"""Scenario 1 (the bare echo ceiling) and the idle-socket measurement shared by scenario 3.

The echo server is `bench/rt_echo_app.py` in its own process, served like our server is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.rt_common import PYTHON, child_env, free_port, proc_status, serve
from bench.rt_load import ECHO, Link, LoadSpec, OpenReport, Phase, error_summary, run_load, split
from bench.rt_report import CpuMeter, phase_row

WARM_UP_SOCKETS = 100  # opened and closed before the idle baseline, so lazy set-up is not counted


@dataclass(frozen=True, slots=True)
class EchoNumbers:
    rows: list[list[Any]]
    saturation_rate: float | None
    steady_p99_ms: float | None


def echo_server_args(port: int) -> list[str]:
    return [PYTHON, "-m", "bench.rt_echo_app", "--port", str(port)]


def run_echo(connections: int, clients: int, phases: list[Phase], workdir: Path) -> EchoNumbers:
    port = free_port()
    with serve(echo_server_args(port), child_env(), port, workdir / "echo.log") as server:
        url = f"ws://127.0.0.1:{port}/echo"
        links = [Link(url) for _ in range(connections)]
        specs = [LoadSpec(ECHO, tuple(part)) for part in split(links, clients)]
        meter = CpuMeter(server.pid)
        outcome = run_load(specs, phases, before_phase=meter.start, after_phase=meter.stop)
    label = f"echo ×{len(specs)} client proc"
    rows = [phase_row(label, outcome.opened.opened, phase, result, cpu)
            for phase, result, cpu in zip(phases, outcome.phases, meter.used, strict=True)]
    saturation = next((r.rate for r in outcome.phases if r.mode == "saturate"), None)
    steady = next((r for r in outcome.phases if r.mode == "steady"), None)
    p99 = None
    if steady is not None and steady.latencies_ms:
        p99 = sorted(steady.latencies_ms)[int(len(steady.latencies_ms) * 0.99)]
    return EchoNumbers(rows, saturation, p99)


# --- idle sockets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleNumbers:
    label: str
    opened: int
    failed: int
    rss_before_kib: int
    rss_after_kib: int
    threads_before: int
    threads_after: int
    errors: str

    @property
    def kib_per_socket(self) -> float | None:
        if not self.opened:
            return None
        return (self.rss_after_kib - self.rss_before_kib) / self.opened

    def row(self) -> list[Any]:
        return [self.label, self.opened, self.failed, self.rss_before_kib / 1024,
                self.rss_after_kib / 1024, self.kib_per_socket, self.threads_before,
                self.threads_after, self.errors]


IDLE_HEADERS = ("server", "sockets", "failed", "RSS before MiB", "RSS after MiB", "KiB/socket",
                "threads before", "threads after", "errors")


def measure_idle(label: str, pid: int, specs: list[LoadSpec], warm_up: list[LoadSpec],
                 settle_secs: float) -> IdleNumbers:
    """Server RSS before and after the workers of `specs` opened (and hold) their sockets."""
    run_load(warm_up, [])
    time.sleep(settle_secs)
    before = proc_status(pid)
    after: dict[str, int] = {}
    report = OpenReport()

    def hold(opened: OpenReport) -> None:
        report.merge(opened)
        time.sleep(settle_secs)
        after.update(proc_status(pid))

    run_load(specs, [], after_open=hold)
    return IdleNumbers(label, report.opened, report.failed, before["VmRSS"], after["VmRSS"],
                       before["Threads"], after["Threads"], error_summary(report.errors))


def run_idle_echo(sockets: int, clients: int, settle_secs: float, workdir: Path) -> IdleNumbers:
    port = free_port()
    with serve(echo_server_args(port), child_env(), port, workdir / "echo-idle.log") as server:
        url = f"ws://127.0.0.1:{port}/echo"
        specs = [LoadSpec(ECHO, tuple(part)) for part in split([Link(url)] * sockets, clients)]
        warm_up = [LoadSpec(ECHO, (Link(url),) * WARM_UP_SOCKETS)]
        return measure_idle("bare echo", server.pid, specs, warm_up, settle_secs)
