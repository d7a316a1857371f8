"""api/openapi.yaml: valid OpenAPI, internally consistent, in step with the models it
describes, and served by api/docs.py. No services needed: the docs blueprint is mounted on
a bare Flask app. (That every route of ``create_app()`` is documented, and nothing else, is
tests/integration/test_openapi_routes.py: building the real app opens the database pool.)"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from flask import Flask
from pydantic import BaseModel

from api.docs import STATIC_FILES, load_spec
from api.docs import bp as docs_bp
from api.errors import register_error_handlers
from api.logs.service import event_json
from api.tenants.views import TenantCreate, TenantPatch
from auditlog.events import RECORD_FIELDS, ActionType, EventIn, Severity
from auditlog.retention import REDACTABLE_FIELDS
from auditlog.tenants import TENANT_STATUSES
from auditlog.tokens import ROLES

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Unauthenticated on purpose; every other operation needs the bearer token.
PUBLIC_PATHS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/docs",
    "/api/v1/docs/static/{filename}",
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_json_data_of_openapi_3_0(spec: dict[str, Any]) -> None:
    # YAML can make values JSON has no spelling for (dates, non-string keys); none here.
    assert json.loads(json.dumps(spec)) == spec
    assert re.fullmatch(r"3\.0\.\d+", spec["openapi"])  # Swagger UI 4 renders 3.0 only


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    """Against the OpenAPI 3.0 meta-schema that schemathesis ships, and every operation
    loads (its references resolve) as schemathesis will use it."""
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.validate()
    results = list(loaded.get_all_operations())
    assert len(results) == sum(1 for _ in operations(spec))
    for result in results:
        result.ok()  # raises the schema error of an operation that does not load


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    for ref in set(refs(spec)):
        assert resolve(spec, {"$ref": ref}) is not None, ref


def test_operation_ids_are_unique_and_links_name_real_operations(spec: dict[str, Any]) -> None:
    by_id: dict[str, dict[str, Any]] = {}
    path_params: dict[str, set[str]] = {}
    for path, _method, op in operations(spec):
        assert op["operationId"] not in by_id, op["operationId"]
        by_id[op["operationId"]] = op
        path_params[op["operationId"]] = set(re.findall(r"{(\w+)}", path))
    links = 0
    for _path, _method, op in operations(spec):
        for response in op["responses"].values():
            for link in resolve(spec, response).get("links", {}).values():
                links += 1
                assert link["operationId"] in by_id, link
                for name, expression in link["parameters"].items():
                    assert name in path_params[link["operationId"]], (link, name)
                    assert expression.startswith("$response.body#/"), expression
    assert links >= 5  # POST logs → GET; POST tenants → GET, PATCH; list → GET; PATCH → GET


def test_every_error_is_a_problem_document(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail"]
    assert problem["additionalProperties"] is False
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400 or (path, status) == ("/readyz", "503"):
                continue
            content = resolve(spec, response)["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            schema = content["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)


def test_documented_headers(spec: dict[str, Any]) -> None:
    def headers(path: str, method: str, status: str) -> dict[str, Any]:
        response = resolve(spec, spec["paths"][path][method]["responses"][status])
        return {k: resolve(spec, v) for k, v in response.get("headers", {}).items()}

    assert headers("/api/v1/logs", "post", "202")["Location"]["required"] is True
    assert "Idempotent-Replayed" in headers("/api/v1/logs", "post", "202")
    assert headers("/api/v1/tenants", "post", "201")["Location"]["required"] is True
    for path, method, op in operations(spec):
        for status in op["responses"]:
            found = headers(path, method, status)
            if status == "401":
                assert found["WWW-Authenticate"]["required"] is True, (method, path)
            if status in ("429", "503") and path != "/readyz":
                assert found["Retry-After"]["required"] is True, (method, path, status)
    for path in ("/api/v1/logs", "/api/v1/logs/bulk"):
        names = [
            resolve(spec, p)["name"] for p in spec["paths"][path]["post"].get("parameters", [])
        ]
        assert "Idempotency-Key" in names, path


def test_security_bearer_jwt_everywhere_but_the_public_paths(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for claim in ("sub", "role", "tenant_id"):
        assert f"`{claim}`" in scheme["description"]
    assert spec["security"] == [{"bearerAuth": []}]
    for path, method, op in operations(spec):
        if path in PUBLIC_PATHS:
            assert op["security"] == [], (method, path)
        else:
            assert "security" not in op, (method, path)
            assert set(op["x-roles"]) <= set(ROLES), (method, path)
            assert "401" in op["responses"], (method, path)
            assert "403" in op["responses"], (method, path)
    for role in ROLES:
        assert f"`{role}`" in spec["info"]["description"]


def _constraints(node: dict[str, Any], branches: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"types": set()}
    for branch in branches:
        if "type" in branch:
            found["types"].add(branch["type"])
        if branch.get("nullable"):
            found["types"].add("null")
        for key in ("minLength", "maxLength", "minimum", "maximum", "format", "enum"):
            if key in branch:
                found[key] = branch[key]
    if "enum" in found:
        found["enum"] = [v for v in found["enum"] if v is not None]
    return found


def _assert_mirrors(spec: dict[str, Any], schema_name: str, model: type[BaseModel]) -> None:
    """The documented schema has the model's fields, required set, types (null included),
    lengths, bounds, enums and formats, as pydantic's own JSON Schema states them."""
    documented = spec["components"]["schemas"][schema_name]
    generated = model.model_json_schema()
    assert set(documented["properties"]) == set(generated["properties"]), schema_name
    assert set(documented.get("required", [])) == set(generated.get("required", [])), schema_name
    assert documented["additionalProperties"] is False  # unknown fields are rejected (422)
    assert generated["additionalProperties"] is False
    for name, prop in generated["properties"].items():
        if "$ref" in prop:  # an enum of pydantic's $defs: compared by the caller
            continue
        theirs = _constraints(prop, prop.get("anyOf", [prop]))
        node = resolve(spec, documented["properties"][name])
        mine = _constraints(node, [node])
        if "format" not in theirs:  # pydantic states no format for ip_address
            mine.pop("format", None)
        assert mine == theirs, (schema_name, name, mine, theirs)


def test_event_schema_mirrors_the_event_model(spec: dict[str, Any]) -> None:
    _assert_mirrors(spec, "EventIn", EventIn)
    schemas = spec["components"]["schemas"]
    assert schemas["ActionType"]["enum"] == [a.value for a in ActionType]
    assert schemas["Severity"]["enum"] == [s.value for s in Severity]
    ip = schemas["EventIn"]["properties"]["ip_address"]
    assert [b["format"] for b in ip["anyOf"]] == ["ipv4", "ipv6"]
    for field in ("before_state", "after_state", "metadata"):
        prop = schemas["EventIn"]["properties"][field]
        assert (prop["type"], prop["nullable"], prop["additionalProperties"]) == (
            "object",
            True,
            True,
        )
    assert schemas["RedactableField"]["enum"] == list(REDACTABLE_FIELDS)


def test_stored_event_schema_names_what_the_api_returns(spec: dict[str, Any]) -> None:
    row: dict[str, Any] = {name: None for name in RECORD_FIELDS}
    row |= {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "seq": 1,
        "created_at": datetime.now(UTC),
        "action_type": "VIEW",
        "resource_type": "t",
        "resource_id": "r",
        "severity": "INFO",
        "prev_hash": bytes(32),
        "hash": bytes(32),
        "redacted": ["user_id"],
    }
    stored = spec["components"]["schemas"]["StoredEvent"]
    assert set(event_json(row)) == set(stored["properties"])
    assert set(stored["required"]) == set(stored["properties"])  # present, maybe null


def test_tenant_schemas_mirror_the_tenant_models(spec: dict[str, Any]) -> None:
    _assert_mirrors(spec, "TenantCreate", TenantCreate)
    _assert_mirrors(spec, "TenantPatch", TenantPatch)
    assert spec["components"]["schemas"]["TenantStatus"]["enum"] == list(TENANT_STATUSES)


def test_limits_and_policies_are_written_down(spec: dict[str, Any]) -> None:
    text = spec["info"]["description"]
    for fact in ("256 KiB", "5 MiB", "1000 events", "Rate limit", "Retry-After", "422"):
        assert fact in text, fact
    assert "Unknown fields are rejected" in text


@pytest.fixture
def docs_app() -> Flask:
    app = Flask(__name__)
    register_error_handlers(app)
    app.register_blueprint(docs_bp)
    return app


def test_openapi_json_serves_the_document(docs_app: Flask, spec: dict[str, Any]) -> None:
    response = docs_app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == spec


def test_docs_page_loads_swagger_ui_from_this_api(docs_app: Flask) -> None:
    client = docs_app.test_client()
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'url: "/api/v1/openapi.json"' in html
    assert "http" not in html  # nothing from a CDN: this machine may have no internet
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {a.rsplit("/", 1)[1] for a in assets} == set(STATIC_FILES)
    for asset in assets:
        assert asset.startswith("/api/v1/docs/static/"), asset
        with client.get(asset) as response:  # a file response: closed when done
            assert response.status_code == 200, asset
            assert response.mimetype == STATIC_FILES[asset.rsplit("/", 1)[1]]
            assert len(response.get_data()) > 100
    with client.get("/api/v1/docs/static/swagger-ui-bundle.js") as bundle:
        assert "SwaggerUIBundle" in bundle.get_data(as_text=True)


@pytest.mark.parametrize("name", ["index.html", "swagger-initializer.js", "..%2Fdocs.py", "x"])
def test_docs_static_serves_only_the_page_assets(docs_app: Flask, name: str) -> None:
    response = docs_app.test_client().get(f"/api/v1/docs/static/{name}")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
