"""Rows of the real-time benchmark's tables: load phases (with server and client CPU) and the
summary against the issue's targets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.rt_common import cpu_secs, machine_busy_secs, percentile, print_table
from bench.rt_load import Phase, PhaseResult, error_summary

PHASE_HEADERS = ("run", "phase", "links", "offered/s", "delivered/s", "p50 ms", "p99 ms",
                 "max ms", "lost", "server CPU %", "client CPU %", "machine busy %", "errors")


@dataclass
class CpuMeter:
    """CPU seconds the server process used in each phase's measured window (sampled by timers
    at the window's two ends, CLOCK_MONOTONIC like the workers' schedule)."""

    pid: int
    used: list[tuple[float, float]] = field(default_factory=list)  # (server, whole machine)
    _timers: list[threading.Timer] = field(default_factory=list)
    _samples: list[tuple[float, float]] = field(default_factory=list)

    def start(self, phase: Phase, start: float) -> None:
        self._samples = []
        window_start = start + phase.warmup_secs
        for at in (window_start, window_start + phase.measure_secs):
            timer = threading.Timer(max(0.0, at - time.monotonic()), self._sample)
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def stop(self, _phase: Phase, _result: PhaseResult) -> None:
        for timer in self._timers:
            timer.join(timeout=5)
        self._timers = []
        samples = self._samples
        if len(samples) == 2:
            self.used.append((samples[1][0] - samples[0][0], samples[1][1] - samples[0][1]))
        else:
            self.used.append((float("nan"), float("nan")))

    def _sample(self) -> None:
        try:
            self._samples.append((cpu_secs(self.pid), machine_busy_secs()))
        except OSError:  # the server died; the phase's errors say why
            pass


def phase_row(run: str, links: int, phase: Phase, result: PhaseResult,
              cpu: tuple[float, float]) -> list[Any]:
    """CPU columns are % of one core over the measured window (this machine has
    os.cpu_count() cores: "machine busy" counts everyone's work, ours included)."""
    window = phase.measure_secs
    server_cpu_secs, machine_secs = cpu
    latencies = result.latencies_ms
    offered = links / phase.interval_secs if phase.mode == "steady" else None
    return [run, phase.mode if phase.mode == "steady" else f"saturate (window {phase.window})",
            links, offered, result.rate, percentile(latencies, 0.50), percentile(latencies, 0.99),
            max(latencies) if latencies else None, result.lost_in_window,
            100.0 * server_cpu_secs / window, 100.0 * result.client_cpu_secs / window,
            100.0 * machine_secs / window,
            error_summary(result.errors)]


def print_phases(title: str, rows: list[list[Any]]) -> None:
    print_table(title, PHASE_HEADERS, rows)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: Any  # None = not measured in this run
    passed: bool | None
    note: str = ""


def print_summary(targets: list[Target]) -> None:
    rows = []
    for target in targets:
        if target.measured is None:
            verdict = "not run"
        elif target.passed is None:
            verdict = "n/a"
        else:
            verdict = "PASS" if target.passed else "FAIL"
        rows.append([target.name, target.goal, target.measured, verdict, target.note])
    print_table("Summary against the issue's targets",
                ("target", "goal", "measured", "verdict", "note"), rows)
