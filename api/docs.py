"""The API's own description: ``GET /api/v1/openapi.json`` (``api/openapi.yaml`` as JSON) and
a browsable Swagger UI page at ``GET /api/v1/docs``.

The page's scripts and styles come from the ``swagger-ui-bundle`` package and are served by
this blueprint (``/api/v1/docs/static/...``), so it works without internet access. The YAML
is read and converted once per app, when the blueprint is registered; a broken document
fails ``create_app`` rather than a request. No authentication is needed for any of this.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, abort, current_app, send_from_directory, url_for
from flask.blueprints import BlueprintSetupState
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

bp = Blueprint("docs", __name__, url_prefix="/api/v1")

SPEC_RESOURCE = "openapi.yaml"
_EXTENSION_KEY = "auditlog.openapi"

# The only files the page loads, with fixed media types (not guessed from the system's
# mime.types), so that every other name is a 404 and the answer is the same everywhere.
STATIC_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
SWAGGER_UI_DIR = Path(str(swagger_ui_path))


def load_spec() -> dict[str, Any]:
    """The OpenAPI document shipped with the ``api`` package, as plain JSON data."""
    text = resources.files("api").joinpath(SPEC_RESOURCE).read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError(f"api/{SPEC_RESOURCE} is not a YAML mapping")
    return spec


@bp.record_once
def _load_once(state: BlueprintSetupState) -> None:
    # Serialised once: every request answers the same bytes. json.dumps also refuses
    # anything YAML made that JSON cannot hold (dates, for instance).
    state.app.extensions[_EXTENSION_KEY] = json.dumps(load_spec()).encode()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(current_app.extensions[_EXTENSION_KEY], mimetype="application/json")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>auditlog API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon32}" sizes="32x32">
  <link rel="icon" type="image/png" href="{icon16}" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: {spec},
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


@bp.get("/docs")
def docs_page() -> Response:
    def asset(name: str) -> str:
        return url_for("docs.docs_static", filename=name)

    page = _PAGE.format(
        css=asset("swagger-ui.css"),
        icon32=asset("favicon-32x32.png"),
        icon16=asset("favicon-16x16.png"),
        bundle=asset("swagger-ui-bundle.js"),
        spec=json.dumps(url_for("docs.openapi_json")),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/static/<filename>")
def docs_static(filename: str) -> Response:
    mimetype = STATIC_FILES.get(filename)
    if mimetype is None:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIR, filename, mimetype=mimetype)
