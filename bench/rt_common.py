"""Shared helpers of the real-time benchmark (bench/realtime.py): statistics, tables, process
stats from /proc, file-descriptor limits, and a server subprocess with a bounded start-up."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
START_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 20.0
POLL_SECS = 0.1
NOT_AVAILABLE = "not available"


class Unavailable(RuntimeError):
    """A scenario cannot run yet (a route or module it needs is missing); the reason says what."""


# --- statistics and tables -----------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in cells:
        # Numbers right-aligned, text left-aligned.
        print("  ".join(c.rjust(w) if c[:1].isdigit() or c[:1] in "-—" else c.ljust(w)
                        for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


# --- process stats -------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (KiB) and Threads of a process, from /proc/<pid>/status."""
    wanted = {"VmRSS", "VmHWM", "Threads"}
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in wanted:
                found[name] = int(value.split()[0])
    return found


def rss_kib(pid: int | str = "self") -> int:
    return proc_status(pid)["VmRSS"]


def thread_count(pid: int | str = "self") -> int:
    return proc_status(pid)["Threads"]


def cpu_secs(pid: int | str = "self") -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" of the command name: field 3 is index 0, so utime (14) and stime (15).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_secs() -> float:
    """CPU seconds all CPUs of the machine spent not idle (first line of /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_status(url: str, timeout_secs: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_secs) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# --- a server in a subprocess --------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def run_checked(args: Sequence[str], env: dict[str, str], timeout_secs: float = 300) -> None:
    done = subprocess.run(list(args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_secs, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")


@contextlib.contextmanager
def serve(args: Sequence[str], env: dict[str, str], port: int, log_path: Path,
          health_path: str = "/health") -> Iterator[ServerProcess]:
    """Start `args` (a server on 127.0.0.1:`port`); wait until `health_path` answers 200
    (bounded); stop it (SIGTERM, then SIGKILL) on exit. It inherits our open-file limit, so
    call `raise_nofile()` first."""
    base_url = f"http://127.0.0.1:{port}"
    log_file: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 -- closed in finally
    process = subprocess.Popen(list(args), env=env, cwd=REPO, stdout=log_file,
                               stderr=subprocess.STDOUT)
    server = ServerProcess(process, base_url, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while http_status(base_url + health_path) != 200:
            if process.poll() is not None:
                raise RuntimeError(f"server exited ({process.returncode}):\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer {health_path} within "
                                   f"{START_TIMEOUT_SECS:.0f} s:\n{server.log_tail()}")
            time.sleep(POLL_SECS)
        yield server
    finally:
        stop_process(process)
        log_file.close()


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECS)


def child_env(**overrides: str) -> dict[str, str]:
    """This environment without settings that would change what the server under test does."""
    dropped = ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "DATA_DIR",
               "SMTP_URL", "AUTO_MIGRATE", "SECRET_KEY", "SITE_SECRET", "PORT", "HOST")
    env = {key: value for key, value in os.environ.items()
           if key not in dropped and not key.startswith("TEST_")}
    env.update(overrides)
    return env
