"""Every refusal is JSON `{"detail", "code"}`, whatever produced it."""

from __future__ import annotations

from starlette.testclient import TestClient


def test_unknown_path_is_json_404(client: TestClient) -> None:
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found", "code": "not_found"}


def test_trailing_slash_is_another_path(client: TestClient) -> None:
    response = client.get("/api/no-such-thing/", follow_redirects=False)
    assert response.status_code == 404
