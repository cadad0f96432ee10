"""GET /api/me/rate-limits reports the caller's real windows, on memory and on Redis storage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from server.ratelimit import USER_NAMESPACES
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
GENERAL_LIMIT = 7
GENERAL_WINDOW_SECS = 60
# Nothing listens on port 1 of the loopback: connections are refused at once.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def settings_env(redis_url: str | None) -> dict[str, str]:
    env = {"RATE_LIMITS": f"api_general={GENERAL_LIMIT}/{GENERAL_WINDOW_SECS}"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def test_reports_every_user_namespace(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.get("/api/me/rate-limits", headers=auth_headers(user))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user.id
    assert body["timestamp"].endswith("Z")
    assert set(body["rate_limits"]) == set(USER_NAMESPACES)
    for entry in body["rate_limits"].values():
        assert set(entry) == {"current", "limit", "window", "remaining"}


def test_limit_and_window_are_the_configured_rule(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    body = client.get("/api/me/rate-limits", headers=auth_headers(user)).json()
    general = body["rate_limits"]["api_general"]
    assert (general["limit"], general["window"]) == (GENERAL_LIMIT, GENERAL_WINDOW_SECS)
    metrics = body["rate_limits"]["metrics"]
    assert (metrics["limit"], metrics["window"]) == (20, 300)


def test_current_counts_the_callers_requests(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    first = client.get("/api/me/rate-limits", headers=headers).json()["rate_limits"]
    client.get("/api/me", headers=headers)
    second = client.get("/api/me/rate-limits", headers=headers).json()["rate_limits"]
    # The report itself is an authenticated request: it counted before it read the window.
    assert first["api_general"]["current"] == 1
    assert second["api_general"]["current"] == 3
    assert second["api_general"]["remaining"] == GENERAL_LIMIT - 3


def test_other_users_requests_do_not_count(
    client: TestClient, make_user: Callable[..., UserRecord], auth_headers: Headers
) -> None:
    me, other = make_user(), make_user()
    for _ in range(3):
        client.get("/api/me", headers=auth_headers(other))
    body = client.get("/api/me/rate-limits", headers=auth_headers(me)).json()
    assert body["rate_limits"]["api_general"]["current"] == 1


def test_request_after_the_limit_is_429(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    for _ in range(GENERAL_LIMIT):
        assert client.get("/api/me/rate-limits", headers=headers).status_code == 200
    refused = client.get("/api/me/rate-limits", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["x-ratelimit-limit"] == str(GENERAL_LIMIT)
    assert int(refused.headers["retry-after"]) >= 1


def test_needs_a_token(client: TestClient) -> None:
    assert client.get("/api/me/rate-limits").status_code == 401


class TestWithRedisDown:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"REDIS_URL": UNREACHABLE_REDIS}

    def test_every_namespace_says_redis_unavailable(
        self, client: TestClient, user: UserRecord, auth_headers: Headers
    ) -> None:
        response = client.get("/api/me/rate-limits", headers=auth_headers(user))
        assert response.status_code == 200
        assert response.json()["rate_limits"] == {
            namespace: {"status": "redis_unavailable"} for namespace in USER_NAMESPACES
        }
