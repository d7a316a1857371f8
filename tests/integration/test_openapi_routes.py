"""api/openapi.yaml names exactly the routes ``create_app()`` registers, and the app serves
it. Here rather than in tests/unit because building the app opens the database pool."""

from __future__ import annotations

import re

from flask import Flask

from api.docs import load_spec

DOCUMENTED_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # HEAD/OPTIONS are Flask's own
# Registered twice by the app; the document names the form without the trailing slash.
ALIASES = {
    ("POST", "/api/v1/logs/"): ("POST", "/api/v1/logs"),
    ("GET", "/api/v1/logs/"): ("GET", "/api/v1/logs"),
}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) & DOCUMENTED_METHODS:
            routes.add(ALIASES.get((method, path), (method, path)))
    return routes


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in load_spec()["paths"].items()
        for method in item
        if method.upper() in DOCUMENTED_METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists(app: Flask) -> None:
    routes = app_routes(app)
    documented = documented_routes()
    assert routes - documented == set(), "routes missing from api/openapi.yaml"
    assert documented - routes == set(), "documented in api/openapi.yaml but not routed"
    assert ("POST", "/api/v1/logs") in routes  # the alias mapping above still applies


def test_the_app_serves_its_document_and_docs_page(app: Flask) -> None:
    client = app.test_client()
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == load_spec()
    page = client.get("/api/v1/docs")  # no token: the docs are public
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.get_data(as_text=True)
