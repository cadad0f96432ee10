"""The OpenAPI generator, on a synthetic set of endpoints covering every declaration form."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, EmailStr, Field
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR, OPENAPI_31_VALIDATOR

from server.http.docs import as_openapi_30
from server.http.openapi import build_document
from server.http.routing import ApiRouter, Call, Endpoint


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class CreateIn(BaseModel):
    email: EmailStr
    role: Literal["user", "admin"] = "user"
    address: Address | None = Field(None, description="where they live")
    score: float = Field(0, gt=0, examples=[1.5])


class LoginForm(BaseModel):
    username: str
    password: str


class ListQuery(BaseModel):
    page: int = Field(1, ge=1)
    search: str | None = None
    required_flag: bool


class ItemOut(BaseModel):
    id: int
    name: str | None


def _other_item_out() -> type[BaseModel]:
    class ItemOut(BaseModel):  # same name, different shape: must not overwrite the other
        other: str

    return ItemOut


async def _handler(call: Call) -> dict[str, Any]:
    """Do the thing.

    Longer text.
    """
    return {}


def _endpoints() -> list[Endpoint]:
    router = ApiRouter("sample")
    router.route("POST", "/api/items", auth="admin", body=CreateIn, response=ItemOut,
                 status=201, rate_limit="admin_create_user")(_handler)
    router.route("POST", "/api/login-form", auth="none", form=LoginForm,
                 aliases=("/api/auth/login-form",))(_handler)
    router.route("GET", "/api/items", auth="user", query=ListQuery,
                 response=list[ItemOut])(_handler)
    router.route("DELETE", "/api/items/{item_id}", auth="admin", status=204)(_handler)
    router.route("GET", "/api/things/{slug}/parts/{part_id}", auth=("site", "user", "service"),
                 str_params=("slug",), response=_other_item_out())(_handler)
    router.route("POST", "/api/internal", auth="service", errors=(409,))(_handler)
    return router.endpoints


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(_endpoints(), version="9.9.9")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_document_is_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    OPENAPI_31_VALIDATOR.validate(document)


def test_every_endpoint_has_an_operation(document: dict[str, Any]) -> None:
    for endpoint in _endpoints():
        assert endpoint.method.lower() in document["paths"][endpoint.path]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    refs = _refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas


def test_models_sharing_a_name_get_distinct_components(document: dict[str, Any]) -> None:
    listed = document["paths"]["/api/items"]["get"]["responses"]["200"]
    things = document["paths"]["/api/things/{slug}/parts/{part_id}"]["get"]["responses"]["200"]
    list_ref = listed["content"]["application/json"]["schema"]["items"]["$ref"]
    thing_ref = things["content"]["application/json"]["schema"]["$ref"]
    assert list_ref != thing_ref


def test_integer_path_ids_are_typed_integer_and_named_strings_are_strings(
    document: dict[str, Any],
) -> None:
    parameters = document["paths"]["/api/things/{slug}/parts/{part_id}"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter for parameter in parameters}
    assert by_name["part_id"]["schema"]["type"] == "integer"
    assert by_name["slug"]["schema"]["type"] == "string"
    assert by_name["guest_id"]["required"] is False  # a user token is an alternative


def test_query_model_becomes_query_parameters(document: dict[str, Any]) -> None:
    parameters = document["paths"]["/api/items"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter for parameter in parameters}
    assert set(by_name) == {"page", "search", "required_flag"}
    assert all(parameter["in"] == "query" for parameter in parameters)
    assert by_name["required_flag"]["required"] is True
    assert by_name["page"]["required"] is False


def test_form_model_is_urlencoded_and_body_model_is_json(document: dict[str, Any]) -> None:
    form = document["paths"]["/api/login-form"]["post"]["requestBody"]["content"]
    body = document["paths"]["/api/items"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]
    assert list(body) == ["application/json"]


def test_success_status_and_error_responses_follow_the_declaration(
    document: dict[str, Any],
) -> None:
    create = document["paths"]["/api/items"]["post"]["responses"]
    assert set(create) == {"201", "401", "403", "413", "422", "429"}
    assert create["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "Retry-After" in create["429"]["headers"]
    delete = document["paths"]["/api/items/{item_id}"]["delete"]["responses"]
    assert "content" not in delete["204"]
    assert {"404", "422"} <= set(delete)
    internal = document["paths"]["/api/internal"]["post"]["responses"]
    assert set(internal) == {"200", "401", "409"}
    login = document["paths"]["/api/login-form"]["post"]["responses"]
    assert "401" not in login and "403" not in login


def test_security_follows_the_auth_classes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "security" not in paths["/api/login-form"]["post"]
    assert paths["/api/items"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/internal"]["post"]["security"] == [{"serviceToken": []}]
    assert paths["/api/things/{slug}/parts/{part_id}"]["get"]["security"] == [
        {"siteToken": []}, {"bearerAuth": []}, {"serviceToken": []}
    ]
    assert set(document["components"]["securitySchemes"]) == {
        "bearerAuth", "serviceToken", "siteToken"
    }


def test_operations_are_tagged_with_their_module_and_ids_are_unique(
    document: dict[str, Any],
) -> None:
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert {tag for op in operations for tag in op["tags"]} == {"sample"}
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert document["tags"] == [{"name": "sample"}]


def test_openapi_30_rendering_is_valid_and_has_no_null_types(document: dict[str, Any]) -> None:
    converted = as_openapi_30(document)
    OPENAPI_30_VALIDATOR.validate(converted)
    assert converted["openapi"] == "3.0.3"
    assert '"null"' not in repr(converted).replace("'", '"')
    address = converted["components"]["schemas"]["CreateIn"]["properties"]["address"]
    assert address["nullable"] is True
    assert document["openapi"] == "3.1.0"  # the source document is left alone
