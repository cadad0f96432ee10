"""The /api/users/onboarding/* doors (spec §4.2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from server.context import Services
from server.store import users as user_store
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
BASE = "/api/users/onboarding"


@pytest.fixture
def headers(user: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(user)


def _status(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    response = client.get(f"{BASE}/status", headers=headers)
    assert response.status_code == 200
    return response.json()


def _stored(services: Services, user_id: int) -> UserRecord:
    with services.db.read() as session:
        found = user_store.get_user(session, user_id)
    assert found is not None
    return found


def test_status_of_a_new_account(client: TestClient, headers: dict[str, str]) -> None:
    assert _status(client, headers) == {
        "onboarding_completed": False,
        "onboarding_step": 0,
        "onboarding_started_at": None,
        "onboarding_completed_at": None,
        "onboarding_skipped": False,
        "first_bot_created": False,
        "first_message_sent": False,
        "tutorial_tips_shown": [],
        "should_show_onboarding": True,
    }


def test_start_sets_step_one_and_start_time(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/start", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["onboarding_step"] == 1
    assert body["started_at"].endswith("Z")
    assert isinstance(body["message"], str)
    status = _status(client, headers)
    assert status["onboarding_step"] == 1
    assert status["onboarding_started_at"] == body["started_at"]


def test_start_again_restarts_a_skipped_onboarding(
    client: TestClient, headers: dict[str, str]
) -> None:
    client.post(f"{BASE}/skip", headers=headers)
    client.post(f"{BASE}/start", headers=headers)
    status = _status(client, headers)
    assert status["onboarding_completed"] is False
    assert status["onboarding_skipped"] is False
    assert status["onboarding_step"] == 1
    assert status["should_show_onboarding"] is True


def test_update_step_sets_the_step(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/update-step", json={"step": 3}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "message": response.json()["message"],
        "onboarding_step": 3,
        "onboarding_completed": False,
        "onboarding_skipped": False,
    }


def test_update_step_completed_stamps_completion_time(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post(f"{BASE}/update-step", json={"completed": True}, headers=headers)
    assert response.json()["onboarding_completed"] is True
    status = _status(client, headers)
    assert status["onboarding_completed_at"] is not None
    assert status["should_show_onboarding"] is False


def test_update_step_skipped_hides_onboarding(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/update-step", json={"skipped": True}, headers=headers)
    assert response.json()["onboarding_skipped"] is True
    assert _status(client, headers)["should_show_onboarding"] is False


def test_update_step_changes_only_supplied_fields(
    client: TestClient, headers: dict[str, str]
) -> None:
    client.post(f"{BASE}/update-step", json={"step": 4}, headers=headers)
    client.post(f"{BASE}/update-step", json={"completed": True, "step": None}, headers=headers)
    assert _status(client, headers)["onboarding_step"] == 4


@pytest.mark.parametrize("step", [-1, 6, 100])
def test_update_step_out_of_range_is_422(
    client: TestClient, headers: dict[str, str], step: int
) -> None:
    response = client.post(f"{BASE}/update-step", json={"step": step}, headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("body", [{"step": "2"}, {"step": True}, {"completed": "yes"}])
def test_update_step_wrong_types_are_422(
    client: TestClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    assert client.post(f"{BASE}/update-step", json=body, headers=headers).status_code == 422


def test_update_step_accepts_both_ends_of_the_range(
    client: TestClient, headers: dict[str, str]
) -> None:
    for step in (0, 5):
        response = client.post(f"{BASE}/update-step", json={"step": step}, headers=headers)
        assert response.json()["onboarding_step"] == step


def test_complete_sets_step_five_and_bot_created(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str]
) -> None:
    response = client.post(f"{BASE}/complete", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["first_bot_created"] is True
    assert body["completed_at"].endswith("Z")
    stored = _stored(services, user.id)
    assert (stored.onboarding_completed, stored.onboarding_step) == (True, 5)
    assert stored.first_bot_created is True


def test_skip_marks_skipped_and_completed(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str]
) -> None:
    response = client.post(f"{BASE}/skip", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["skipped"] is True
    assert body["completed_at"].endswith("Z")
    stored = _stored(services, user.id)
    assert stored.onboarding_skipped and stored.onboarding_completed


def test_save_tip_is_idempotent(client: TestClient, headers: dict[str, str]) -> None:
    first = client.post(f"{BASE}/save-tip", json={"tip_id": "dialogs"}, headers=headers)
    client.post(f"{BASE}/save-tip", json={"tip_id": "widget"}, headers=headers)
    again = client.post(f"{BASE}/save-tip", json={"tip_id": "dialogs"}, headers=headers)
    assert first.status_code == 200
    assert first.json()["shown_tips"] == ["dialogs"]
    assert again.json()["shown_tips"] == ["dialogs", "widget"]
    assert _status(client, headers)["tutorial_tips_shown"] == ["dialogs", "widget"]


@pytest.mark.parametrize("body", [{"tip_id": ""}, {"tip_id": "x" * 101}, {}, {"tip_id": 5}])
def test_save_tip_needs_a_short_non_empty_id(
    client: TestClient, headers: dict[str, str], body: dict[str, object]
) -> None:
    assert client.post(f"{BASE}/save-tip", json=body, headers=headers).status_code == 422


def test_save_tip_refuses_whitespace_only_id(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/save-tip", json={"tip_id": "   "}, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "tip_id"


def test_mark_first_message_sets_the_flag(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/mark-first-message", headers=headers)
    assert response.status_code == 200
    assert response.json()["first_message_sent"] is True
    assert _status(client, headers)["first_message_sent"] is True


def test_mark_bot_created_sets_the_flag(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(f"{BASE}/mark-bot-created", headers=headers)
    assert response.status_code == 200
    assert response.json()["first_bot_created"] is True
    assert _status(client, headers)["first_bot_created"] is True


def test_onboarding_of_one_user_does_not_touch_another(
    client: TestClient, make_user: Callable[..., UserRecord], auth_headers: Headers,
    headers: dict[str, str],
) -> None:
    other = make_user()
    client.post(f"{BASE}/complete", headers=headers)
    assert _status(client, auth_headers(other))["onboarding_completed"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "status"), ("POST", "start"), ("POST", "update-step"), ("POST", "complete"),
        ("POST", "skip"), ("POST", "save-tip"), ("POST", "mark-first-message"),
        ("POST", "mark-bot-created"),
    ],
)
def test_onboarding_needs_a_token(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, f"{BASE}/{path}", json={})
    assert response.status_code == 401
