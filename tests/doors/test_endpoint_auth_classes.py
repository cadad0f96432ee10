"""Every endpoint of the spec's list exists and enforces its auth class (spec/endpoints.tsv).

The list lives beside the repository (`../shared/spec/endpoints.tsv`). Rows are checked for
the modules implemented so far (`CHECKED_MODULES`; later issues add theirs), except the
`NOT_YET_SERVED` rows, each named with the reason. Path ids are replaced by 1; existence is
read from the router (an unmatched path is a JSON 404 like any other, so a status code cannot
tell "no route" from "no such user").
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from starlette.routing import Match
from starlette.testclient import TestClient

from server.store.users import UserRecord

ENDPOINTS_TSV = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "endpoints.tsv"
CHECKED_MODULES = frozenset(
    {"auth", "email", "users", "users+admin", "assistants", "documents", "ai_chat", "admin",
     "dialogs", "site", "handoff"}
)
# The admin rows that the foundation (2) and AI-engine (3) issues do not cover.
LATER_ADMIN = "admin analytics, settings, bots and integration tokens come with a later issue"
# Rows of checked modules that a later issue serves, with the reason they are not checked yet.
NOT_YET_SERVED = {
    ("GET", "/api/admin/advanced-analytics"): LATER_ADMIN,
    ("GET", "/api/admin/bots-monitoring"): LATER_ADMIN,
    ("GET", "/api/admin/bots-monitoring/stats"): LATER_ADMIN,
    ("POST", "/api/admin/bots/{bot_id}/action"): LATER_ADMIN,
    ("GET", "/api/admin/embed-codes"): LATER_ADMIN,
    ("GET", "/api/admin/realtime-stats"): LATER_ADMIN,
    ("GET", "/api/admin/settings"): LATER_ADMIN,
    ("POST", "/api/admin/settings/bulk-update"): LATER_ADMIN,
    ("GET", "/api/admin/settings/categories"): LATER_ADMIN,
    ("POST", "/api/admin/settings/test"): LATER_ADMIN,
    ("DELETE", "/api/admin/settings/{category}/{key}"): LATER_ADMIN,
    ("POST", "/api/admin/settings/{category}/{key}"): LATER_ADMIN,
    ("PUT", "/api/admin/settings/{category}/{key}"): LATER_ADMIN,
    ("GET", "/api/admin/system-stats"): LATER_ADMIN,
    ("GET", "/api/admin/tokens"): LATER_ADMIN,
    ("POST", "/api/admin/tokens"): LATER_ADMIN,
    ("DELETE", "/api/admin/tokens/{token_id}"): LATER_ADMIN,
    ("GET", "/api/admin/users"): LATER_ADMIN,
}
# Service rows that also take the owner's JWT (so a user token is not refused there).
SERVICE_OR_OWNER = {
    ("GET", "/api/dialogs/{dialog_id}/status"): "spec §4.4: also allowed for the owner's JWT",
}
WRONG_SERVICE_TOKEN = "not-the-service-token"
FORGED_SITE_TOKEN = "not.a.site-token"
VISITOR = "0f6f3c1e-8d5e-4a5e-9a35-3d0f6f3c1e8d"


class SpecRow(NamedTuple):
    method: str
    path: str
    module: str
    auth: str

    @property
    def concrete_path(self) -> str:
        parts = [
            "1" if part.startswith("{") and part.endswith("}") else part
            for part in self.path.split("/")
        ]
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.auth}]"


def _spec_rows() -> list[SpecRow]:
    if not ENDPOINTS_TSV.exists():
        return []
    with ENDPOINTS_TSV.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = {
            SpecRow(row["method"].upper(), row["path"], row["module"], row["auth"])
            for row in reader
            if row["module"] in CHECKED_MODULES
            and (row["method"].upper(), row["path"]) not in NOT_YET_SERVED
        }
    return sorted(rows)


SPEC_ROWS = _spec_rows()
pytestmark = pytest.mark.skipif(
    not ENDPOINTS_TSV.exists(), reason=f"endpoint list not found: {ENDPOINTS_TSV}"
)


def _rows(*auth_classes: str) -> list[SpecRow]:
    return [row for row in SPEC_ROWS if row.auth in auth_classes]


def _route_exists(client: TestClient, row: SpecRow) -> bool:
    scope = {"type": "http", "method": row.method, "path": row.concrete_path, "root_path": ""}
    return any(
        route.matches(scope)[0] == Match.FULL
        for route in client.app.router.routes  # type: ignore[attr-defined]
    )


# Seed paths that only become the spec's row with a query parameter: `GET /api/status`
# without `dialog_id` is the public liveness payload (spec §3.2), with it the handoff status.
ROW_PARAMS = {("GET", "/api/status"): {"dialog_id": "1"}}


def _call(
    client: TestClient, row: SpecRow, headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, dict[str, object]]:
    query = {**ROW_PARAMS.get((row.method, row.path), {}), **(params or {})}
    response = client.request(row.method, row.concrete_path, headers=headers or {},
                              params=query or None)
    assert response.headers["content-type"].startswith("application/json"), str(row)
    return response.status_code, response.json()


def test_status_without_a_dialog_is_the_public_liveness_payload(client: TestClient) -> None:
    response = client.get("/api/status")
    assert response.status_code == 200
    assert set(response.json()) == {"message", "version"}


def test_the_endpoint_list_has_rows_for_the_checked_modules() -> None:
    assert {row.module for row in SPEC_ROWS} == set(CHECKED_MODULES)


def test_rows_not_yet_served_are_still_unrouted(client: TestClient) -> None:
    """Once a later issue serves one, its exclusion must go (and the row gets checked)."""
    for method, path in NOT_YET_SERVED:
        row = SpecRow(method, path, "", "")
        assert not _route_exists(client, row), f"{row} is served now: drop it from NOT_YET_SERVED"


@pytest.mark.parametrize("row", SPEC_ROWS, ids=str)
def test_spec_endpoint_is_routed(client: TestClient, row: SpecRow) -> None:
    assert _route_exists(client, row), f"no route for {row}"


@pytest.mark.parametrize("row", _rows("user", "admin"), ids=str)
def test_endpoint_needs_a_bearer_token(client: TestClient, row: SpecRow) -> None:
    status, body = _call(client, row)
    assert status == 401, f"{row}: {status} {body}"
    assert body["code"] in {"unauthorized", "token_expired"}


@pytest.mark.parametrize("row", _rows("user", "admin"), ids=str)
def test_endpoint_refuses_a_forged_bearer_token(client: TestClient, row: SpecRow) -> None:
    status, _body = _call(client, row, {"Authorization": "Bearer not.a.jwt"})
    assert status == 401, str(row)


@pytest.mark.parametrize("row", _rows("admin"), ids=str)
def test_admin_endpoint_refuses_a_plain_user(
    client: TestClient,
    user: UserRecord,
    auth_headers: Callable[[UserRecord], dict[str, str]],
    row: SpecRow,
) -> None:
    status, body = _call(client, row, auth_headers(user))
    assert status == 403, f"{row}: {status} {body}"


@pytest.mark.parametrize("row", _rows("user"), ids=str)
def test_user_endpoint_lets_a_plain_user_in(
    client: TestClient,
    user: UserRecord,
    auth_headers: Callable[[UserRecord], dict[str, str]],
    row: SpecRow,
) -> None:
    status, body = _call(client, row, auth_headers(user))
    assert status not in {401, 403}, f"{row}: {status} {body}"


@pytest.mark.parametrize("row", _rows("service"), ids=str)
def test_service_endpoint_needs_the_service_token(client: TestClient, row: SpecRow) -> None:
    status, body = _call(client, row)
    assert status == 401, f"{row}: {status} {body}"
    status, body = _call(client, row, {"X-Service-Token": WRONG_SERVICE_TOKEN})
    assert status == 401, f"{row}: {status} {body}"


@pytest.mark.parametrize("row", _rows("service"), ids=str)
def test_service_endpoint_refuses_a_user_token(
    client: TestClient,
    user: UserRecord,
    auth_headers: Callable[[UserRecord], dict[str, str]],
    row: SpecRow,
) -> None:
    status, _body = _call(client, row, auth_headers(user))
    if (row.method, row.path) in SERVICE_OR_OWNER:
        assert status == 404, str(row)  # let in, but dialog 1 is not this user's
    else:
        assert status in {401, 403}, str(row)


def _is_widget(row: SpecRow) -> bool:
    return row.path.startswith("/api/widget/")


@pytest.mark.parametrize("row", _rows("site"), ids=str)
def test_site_endpoint_refuses_a_visitor_without_credentials(
    client: TestClient, row: SpecRow
) -> None:
    status, body = _call(client, row)
    # No token → 401; a missing widget assistant_id/guest_id or chat-page parameter → 422.
    assert status in {401, 422}, f"{row}: {status} {body}"


@pytest.mark.parametrize("row", [r for r in _rows("site") if not _is_widget(r)], ids=str)
def test_site_endpoint_refuses_a_forged_site_token(client: TestClient, row: SpecRow) -> None:
    status, body = _call(client, row, params={"site_token": FORGED_SITE_TOKEN,
                                              "guest_id": VISITOR})
    assert status == 401, f"{row}: {status} {body}"
    assert body["code"] == "invalid_site_token"


@pytest.mark.parametrize("row", [r for r in _rows("site") if _is_widget(r)], ids=str)
def test_widget_endpoint_refuses_an_unknown_assistant(client: TestClient, row: SpecRow) -> None:
    status, body = _call(client, row, params={"assistant_id": "1", "guest_id": VISITOR})
    assert status == 404, f"{row}: {status} {body}"


@pytest.mark.parametrize("row", _rows("none"), ids=str)
def test_public_endpoint_never_asks_for_credentials(client: TestClient, row: SpecRow) -> None:
    status, body = _call(client, row)
    assert status not in {401, 403}, f"{row}: {status} {body}"
    assert status < 500, f"{row}: {status} {body}"
