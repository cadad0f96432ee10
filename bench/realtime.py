"""Real-time benchmark (issue 4): our live-chat path beside the bare ceiling of the same stack.

    .venv/bin/python -m bench.realtime                 # every scenario, quick sizes (~3 min)
    .venv/bin/python -m bench.realtime --full          # the issue's sizes (one at a time!)
    .venv/bin/python -m bench.realtime --echo --actors # only some scenarios
    .venv/bin/python -m bench.realtime --help

Scenarios (flags; none given = all):
  --echo      bare Starlette WebSocket echo (bench/rt_echo_app.py, uvicorn in a subprocess with
              uvloop, httptools, websockets-sansio, no per-message deflate — as `python -m server
              serve`): p50/p99 round trip at a steady rate (every socket one message per
              --interval-secs), then throughput at saturation (every socket keeps --window
              messages in flight).
  --fullpath  our server (`python -m server serve` in a subprocess) on each of --backends:
              `sqlite` (SQLite + in-process bus) and `pg` (a scratch PostgreSQL database, created
              and dropped here, + Redis). Seeds owners (≤ 20 dialogs each: an operator's chat
              limit), one assistant each and their dialogs; every owner goes online and takes
              every dialog over (handoff `active`, so no AI answer is generated). Visitors send on
              /ws/site/dialogs/{id}; operators listen on /ws/dialogs/{id} (or, with
              --operator-socket feed, /ws/operator). Latency = visitor send → `message:new` on the
              operator socket (the nonce in the text matched; client clocks). Same steady and
              saturation phases as the echo; also: messages persisted (counted in the database
              afterwards) vs sent vs delivered, and the ratio to the echo's saturation.
  --idle      server RSS per idle socket (/proc/<pid>/status before and after) at
              --idle-sockets sockets in one server process: the bare echo, and our visitor
              sockets (--idle-per-dialog tabs of one guest per dialog; SQLite).
  --actors    in-process, one fresh process per measurement (bench/rt_actors.py): RSS, threads,
              `Directory.ask` latency at each of --live actors, and threads while --flood keys
              each get one message through a Directory capped at --cap. For each of --actor
              (`minimal` pykka actor, `dialog` = the real DialogActor on a seeded SQLite file).
  --takeover  the AI streams a long answer from the fake OpenAI server; the owner takes over;
              takeover request → `handoff_started` at the visitor, and AI text after it (must be
              none). Reports "not available" until the handoff routes and doors exist.

Tables: latencies in ms; CPU columns in % of one core over the measured window: "server" is the
server process, "client" the load processes, "machine busy" every process on the machine (at
most 100 × cores) — when it is near the top while server + client are well below it, others'
work on the machine took the difference and the numbers are low.

Clients: the load generator is --clients processes (spawned, uvloop, the `websockets` library).
Default 1: on this 2-core machine the server takes one core and a second client process only
takes CPU from it (measured: echo saturation 29,000 msg/s with one client process, 17,000 with
two). Everything runs on 127.0.0.1; every phase, wait and subprocess is bounded in time. Server
logs and scratch files go to a temporary folder (kept with --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.rt_common import PYTHON, REPO, Unavailable, print_table, raise_nofile
from bench.rt_echo import IDLE_HEADERS, IdleNumbers, run_echo, run_idle_echo
from bench.rt_fullpath import FACT_HEADERS, FullPathConfig, run_fullpath, run_idle_ours
from bench.rt_load import Phase
from bench.rt_report import Target, print_phases, print_summary
from bench.rt_takeover import TAKEOVER_HEADERS, TakeoverConfig, run_takeover

SCENARIOS = ("echo", "fullpath", "idle", "actors", "takeover")
QUICK: dict[str, Any] = {
    "connections": 200, "dialogs": 100, "steady_secs": 4.0, "saturate_secs": 4.0,
    "idle_sockets": 1_000, "live": "200,1000", "flood": 10_000, "asks": 500, "takeovers": 10,
    "takeover_concurrency": 5,
}
FULL: dict[str, Any] = {
    "connections": 1_000, "dialogs": 1_000, "steady_secs": 20.0, "saturate_secs": 10.0,
    "idle_sockets": 10_000, "live": "2000,10000", "flood": 100_000, "asks": 2_000,
    "takeovers": 100, "takeover_concurrency": 10,
}
THREAD_SLACK = 16  # "cap + a constant": main thread, directory sweeper, a few helpers
ACTORS_TIMEOUT_SECS = 900


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    for name in SCENARIOS:
        parser.add_argument(f"--{name}", action="store_true", help=f"run the {name} scenario")
    parser.add_argument("--full", action="store_true", help="the issue's sizes")
    parser.add_argument("--backends", default="sqlite,pg", help="full path on: sqlite,pg")
    parser.add_argument("--clients", type=int, default=1, help="load client processes")
    parser.add_argument("--connections", type=int, help="echo sockets (200 / full 1,000)")
    parser.add_argument("--dialogs", type=int, help="full-path dialogs (100 / full 1,000)")
    parser.add_argument("--dialogs-per-owner", type=int, default=20)
    parser.add_argument("--operator-socket", choices=("dialog", "feed"), default="dialog")
    parser.add_argument("--warmup-secs", type=float, default=2.0)
    parser.add_argument("--steady-secs", type=float, help="measured steady window (4 / full 20)")
    parser.add_argument("--saturate-secs", type=float, help="measured saturation (4 / full 10)")
    parser.add_argument("--interval-secs", type=float, default=2.0, help="steady send interval")
    parser.add_argument("--window", type=int, default=1, help="in flight per socket, saturating")
    parser.add_argument("--idle-sockets", type=int, help="idle sockets (1,000 / full 10,000)")
    parser.add_argument("--idle-per-dialog", type=int, default=40)
    parser.add_argument("--settle-secs", type=float, default=3.0)
    parser.add_argument("--live", help="live actor counts (200,1000 / full 2000,10000)")
    parser.add_argument("--flood", type=int, help="keys told once (10,000 / full 100,000)")
    parser.add_argument("--cap", type=int, default=2_000, help="Directory cap for the flood")
    parser.add_argument("--asks", type=int, help="sequential asks timed (500 / full 2,000)")
    parser.add_argument("--actor", default="minimal,dialog",
                        help="actor kits: minimal, dialog, or package.module:function")
    parser.add_argument("--takeovers", type=int, help="takeover rounds (10 / full 100)")
    parser.add_argument("--takeover-concurrency", type=int)
    parser.add_argument("--takeover-backend", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--chunks", type=int, default=200, help="deltas per fake AI answer")
    parser.add_argument("--chunk-delay-secs", type=float, default=0.05)
    parser.add_argument("--grace-secs", type=float, default=1.0,
                        help="how long to watch for AI text after handoff_started")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server to create the scratch database on")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for our server (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    for name, value in (FULL if args.full else QUICK).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not any(getattr(args, name) for name in SCENARIOS):
        for name in SCENARIOS:
            setattr(args, name, True)
    return args


def phases(args: argparse.Namespace) -> list[Phase]:
    warmup = max(args.warmup_secs, args.interval_secs)  # every socket has sent before the window
    return [Phase("steady", warmup, args.steady_secs, interval_secs=args.interval_secs),
            Phase("saturate", args.warmup_secs, args.saturate_secs, window=args.window)]


def guarded(title: str, run: Callable[[], Any]) -> Any:
    """Run one scenario; 'not available' or a failure is printed, the others still run."""
    try:
        return run()
    except Unavailable as exc:
        print(f"\n{title}: not available — {exc}")
    except Exception as exc:  # noqa: BLE001 -- a broken scenario must not hide the others
        traceback.print_exc()
        print(f"\n{title}: FAILED — {type(exc).__name__}: {exc}")
    return None


def run_actor_process(*args: str) -> dict[str, Any]:
    done = subprocess.run([PYTHON, "-m", "bench.rt_actors", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=ACTORS_TIMEOUT_SECS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rt_actors {' '.join(args)}: {done.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "unavailable" in result:
        raise Unavailable(result["unavailable"])
    return result


def actors_scenario(args: argparse.Namespace) -> dict[str, Any]:
    live_rows, flood_rows, floods = [], [], []
    for kit in args.actor.split(","):
        for count in (int(n) for n in args.live.split(",")):
            r = guarded(f"actors {kit} ×{count}", lambda kit=kit, count=count: run_actor_process(
                "live", "--count", str(count), "--asks", str(args.asks), "--actor", kit))
            if r is not None:
                live_rows.append([kit, r["live"], r["threads_before"], r["threads_after"],
                                  r["rss_before_kib"] / 1024, r["rss_after_kib"] / 1024,
                                  r["kib_per_actor"], r["starts_per_sec"], r["ask_p50_us"],
                                  r["ask_p99_us"], r["asks_per_sec_concurrent"],
                                  r["stop_all_secs"]])
        r = guarded(f"actors {kit} flood", lambda kit=kit: run_actor_process(
            "flood", "--count", str(args.flood), "--cap", str(args.cap), "--actor", kit))
        if r is not None:
            floods.append(r)
            flood_rows.append([kit, r["keys"], r["cap"], r["threads_before"], r["max_threads"],
                               r["threads_after"], r["max_live"], r["handled"],
                               r["all_handled"], r["tells_per_sec"], r["elapsed_secs"]])
    print_table("Actors at scale: live actors (Directory, futex-hash opt-out, gc frozen)",
                ("actor", "live", "threads before", "threads after", "RSS before MiB",
                 "RSS after MiB", "KiB/actor", "starts/s", "ask p50 µs", "ask p99 µs",
                 "asks/s (1,000 in flight)", "stop_all s"), live_rows)
    print_table(f"Actors at scale: {args.flood:,} keys told once, Directory cap {args.cap:,} "
                f"(threads sampled every 250 tells)",
                ("actor", "keys", "cap", "threads before", "max threads", "threads after",
                 "max live", "handled", "all handled", "activations/s", "elapsed s"),
                flood_rows)
    return {"floods": floods}


def fullpath_config(args: argparse.Namespace) -> FullPathConfig:
    extra = dict(item.split("=", 1) for item in args.server_env)
    return FullPathConfig(args.dialogs, args.dialogs_per_owner, args.clients,
                          args.operator_socket, phases(args), args.pg_url, args.redis_url, extra)


def summary(args: argparse.Namespace, found: dict[str, Any]) -> list[Target]:
    sizes = "full sizes" if args.full else "quick sizes"
    targets = []
    echo = found.get("echo")
    for name, floor in (("sqlite", 5_000), ("pg", 3_000)):
        numbers = found.get(f"fullpath {name}")
        label = "SQLite" if name == "sqlite" else "PG + Redis"
        p99 = numbers.steady_p99_ms if numbers else None
        targets.append(Target(f"p99 visitor→operator, {label}", "< 50 ms", p99,
                              None if p99 is None else p99 < 50,
                              f"{args.dialogs:,} dialogs × 1 msg / {args.interval_secs:g} s"
                              f" ({sizes})"))
        rate = numbers.saturation_rate if numbers else None
        ratio = (f"{rate / echo.saturation_rate:.2f} × echo ({sizes})"
                 if rate and echo and echo.saturation_rate else sizes)
        targets.append(Target(f"saturation, {label}", f"≥ {floor:,} msg/s", rate,
                              None if rate is None else rate >= floor, ratio))
    idle: list[IdleNumbers] = found.get("idle") or []
    for numbers in idle:
        per = numbers.kib_per_socket
        targets.append(Target(f"idle socket, {numbers.label}", "< 40 KiB", per,
                              None if per is None else per < 40,
                              f"{numbers.opened:,} sockets ({sizes})"))
    for flood in (found.get("actors") or {}).get("floods", []):
        limit = flood["cap"] + THREAD_SLACK
        targets.append(Target(f"threads, {flood['actor']} actors", f"≤ cap + {THREAD_SLACK}",
                              flood["max_threads"], flood["max_threads"] <= limit,
                              f"{flood['keys']:,} keys, cap {flood['cap']:,}"))
    takeover = found.get("takeover")
    p99 = takeover.p99_ms() if takeover else None
    targets.append(Target("takeover → handoff_started p99", "< 100 ms", p99,
                          None if p99 is None else p99 < 100, sizes))
    late = takeover.late_ai() if takeover else None
    targets.append(Target("AI text after handoff_started", "0", late,
                          None if late is None else late == 0, sizes))
    return targets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()  # the servers we start inherit it
    workdir = Path(tempfile.mkdtemp(prefix="rt-bench-"))
    found: dict[str, Any] = {}
    print(f"real-time benchmark, {'full' if args.full else 'quick'} sizes; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (others' work on this "
          f"machine skews the numbers); work folder {workdir}")
    try:
        if args.echo:
            numbers = guarded("echo", lambda: run_echo(args.connections, args.clients,
                                                       phases(args), workdir))
            if numbers is not None:
                found["echo"] = numbers
                print_phases("Bare echo (the ceiling of this stack)", numbers.rows)
        if args.fullpath:
            cfg = fullpath_config(args)
            for name in args.backends.split(","):
                numbers = guarded(f"full path {name}",
                                  lambda name=name: run_fullpath(name, cfg, workdir))
                if numbers is not None:
                    found[f"fullpath {name}"] = numbers
                    print_phases(f"Full path: {numbers.label}", numbers.rows)
                    print_table(f"Full path: {numbers.label} — what happened", FACT_HEADERS,
                                [numbers.facts])
        if args.idle:
            idle = [guarded("idle echo", lambda: run_idle_echo(
                        args.idle_sockets, args.clients, args.settle_secs, workdir)),
                    guarded("idle ours", lambda: run_idle_ours(
                        args.idle_sockets, args.idle_per_dialog, args.clients,
                        args.settle_secs, fullpath_config(args), workdir))]
            found["idle"] = [numbers for numbers in idle if numbers is not None]
            print_table(f"Idle sockets in one server process ({args.idle_sockets:,})",
                        IDLE_HEADERS, [numbers.row() for numbers in found["idle"]])
        if args.actors:
            found["actors"] = actors_scenario(args)
        if args.takeover:
            cfg = TakeoverConfig(args.takeovers, args.takeover_concurrency, args.chunks,
                                 args.chunk_delay_secs, args.grace_secs, args.takeover_backend,
                                 args.pg_url, args.redis_url,
                                 dict(item.split("=", 1) for item in args.server_env))
            numbers = guarded("takeover", lambda: run_takeover(cfg, workdir))
            if numbers is not None:
                found["takeover"] = numbers
                print_table(f"Takeover while the AI streams ({args.takeover_backend}, "
                            f"{args.chunks} deltas {args.chunk_delay_secs:g} s apart)",
                            TAKEOVER_HEADERS, [numbers.row()])
        print_summary(summary(args, found))
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep:
            print(f"\nwork folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
