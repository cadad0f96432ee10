"""Cold start: from launching `./run server` (venv already set up) to answering GET /health.

Each run uses a new empty DATA_DIR (so the SQLite file is created and migrated, and the
signing secrets generated) and a free loopback port, polls 127.0.0.1 until /health answers
(bounded by --timeout), records when /ready answers too, then stops the server.

    .venv/bin/python bench/cold_start.py [--runs 3] [--timeout 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLL_INTERVAL_SECS = 0.01
# Settings that would take the server off the embedded default.
NOT_EMBEDDED = (
    "DATABASE_URL", "REDIS_URL", "SMTP_URL", "AUTO_MIGRATE", "SECRET_KEY", "SITE_SECRET"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def warm_up() -> None:
    """Make sure the venv is installed, so no run measures an install."""
    subprocess.run([str(REPO / "run"), "server", "--help"], check=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)


def one_run(timeout_secs: float) -> tuple[float, float]:
    """Seconds from launch until /health, and until /ready, answered 200."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="replyx-cold-") as data_dir, \
            tempfile.TemporaryFile() as log:
        env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
        env |= {"DATA_DIR": data_dir, "HOST": "127.0.0.1", "PORT": str(port),
                "LOG_LEVEL": "WARNING"}
        base = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        server = subprocess.Popen([str(REPO / "run"), "server"], env=env, cwd=REPO,
                                  stdout=log, stderr=log, start_new_session=True)
        try:
            health = ready = None
            deadline = started + timeout_secs
            while time.perf_counter() < deadline and ready is None:
                if server.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited {server.returncode}:\n"
                                       + log.read().decode(errors="replace")[-2000:])
                if health is None and answers(base + "/health"):
                    health = time.perf_counter() - started
                if health is not None and answers(base + "/ready"):
                    ready = time.perf_counter() - started
                if ready is None:
                    time.sleep(POLL_INTERVAL_SECS)
            if health is None or ready is None:
                raise RuntimeError(f"no answer within {timeout_secs} s")
            return health, ready
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run at most")
    args = parser.parse_args()
    warm_up()
    results = []
    print(f"{'run':>4} {'GET /health (ms)':>17} {'GET /ready (ms)':>16}")
    for index in range(1, args.runs + 1):
        health, ready = one_run(args.timeout)
        results.append((health, ready))
        print(f"{index:>4} {health * 1000:>17.0f} {ready * 1000:>16.0f}", flush=True)
    print(f"{'med':>4} {statistics.median(h for h, _ in results) * 1000:>17.0f} "
          f"{statistics.median(r for _, r in results) * 1000:>16.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
