"""The command line and a real uvicorn server, as an operator of the product uses them:
migrate, create an admin, serve, then sign in over HTTP and manage users."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.store import mail as mail_store
from server.store.db import Database

ADMIN_EMAIL = "Root@Example.com"
ADMIN_PASSWORD = "Cli-admin-pass-1"
START_TIMEOUT_SECS = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEST_")}
    env.update({
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": db_url,
        "SECRET_KEY": "cli-secret-" + "k" * 40,
        "SITE_SECRET": "cli-site-" + "s" * 40,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_PARALLELISM": "1",
        "LOG_FORMAT": "text",
        "HOST": "127.0.0.1",
        "PORT": str(_free_port()),
    })
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture
def running_server(cli_env: dict[str, str]) -> Iterator[str]:
    assert _cli(cli_env, "migrate").returncode == 0
    created = _cli(cli_env, "create-admin", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
    assert created.returncode == 0, created.stderr
    base = f"http://127.0.0.1:{cli_env['PORT']}"
    process = subprocess.Popen([sys.executable, "-m", "server", "serve"], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"server exited: {process.stderr.read() if process.stderr else ''}"
            assert time.monotonic() < deadline, "server did not answer /health in time"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_create_admin_refuses_a_weak_password(cli_env: dict[str, str]) -> None:
    assert _cli(cli_env, "migrate").returncode == 0
    weak = _cli(cli_env, "create-admin", "--email", "a@example.com", "--password", "short")
    assert weak.returncode == 2
    assert "Password" in weak.stderr


def test_create_admin_twice_promotes_instead_of_duplicating(cli_env: dict[str, str]) -> None:
    assert _cli(cli_env, "migrate").returncode == 0
    first = _cli(cli_env, "create-admin", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
    second = _cli(cli_env, "create-admin", "--email", ADMIN_EMAIL.lower(),
                  "--password", ADMIN_PASSWORD + "x")
    assert "admin created" in first.stdout and "admin promoted" in second.stdout
    assert first.stdout.split("id=")[1].split()[0] == second.stdout.split("id=")[1].split()[0]


def test_admin_from_the_cli_manages_users_over_real_http(
    running_server: str, cli_env: dict[str, str]
) -> None:
    with httpx.Client(base_url=running_server, timeout=10) as http:
        login = http.post("/api/login", data={"username": ADMIN_EMAIL.lower(),
                                              "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}

        registered = http.post("/api/register", json={"email": "shop@example.com",
                                                      "password": "Shop-owner-42"})
        assert registered.status_code == 200, registered.text
        database = Database(cli_env["DATABASE_URL"])
        try:
            with database.read() as session:
                [mail] = mail_store.list_outbox(session, "shop@example.com")
        finally:
            database.dispose()
        code = next(word for word in mail.body_text.split() if word.isdigit() and len(word) == 6)
        confirmed = http.post("/api/confirm_email", json={"email": "shop@example.com",
                                                          "code": code})
        assert confirmed.status_code == 200, confirmed.text

        listing = http.get("/api/admin/users/detailed", headers=admin)
        emails = {user["email"] for user in listing.json()["users"]}
        assert emails == {"root@example.com", "shop@example.com"}
        owner_id = registered.json()["id"]
        blocked = http.patch(f"/api/admin/users/{owner_id}", json={"status": "blocked"},
                             headers=admin)
        assert blocked.status_code == 200
        owner_login = http.post("/api/login", data={"username": "shop@example.com",
                                                    "password": "Shop-owner-42"})
        assert owner_login.status_code == 403
        assert owner_login.json()["code"] == "account_blocked"
        assert http.get("/ready").json()["status"] == "ready"
