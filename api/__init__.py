"""The HTTP API: a Flask application factory.

``create_app()`` reads settings from the environment (or takes them), opens the PostgreSQL
pool, binds the SQS queue, and registers one blueprint per area. Nothing is configured at
import time; gunicorn calls ``api:create_app()``.
"""

from __future__ import annotations

from flask import Flask

from api import health, metrics
from api.auth import configure_jwt
from api.docs import bp as docs_bp
from api.errors import register_error_handlers
from api.json_provider import FastJSONProvider
from api.logs import admin as _log_admin  # noqa: F401 (registers cleanup routes on logs_bp)
from api.logs import lane
from api.logs import reads as _log_reads  # noqa: F401 (registers the read routes on logs_bp)
from api.logs.views import bp as logs_bp
from api.observability import install_request_context
from api.services import Services
from api.stream import init_stream
from api.stream.views import HUB_EXTENSION
from api.tenants.views import bp as tenants_bp
from auditlog.logs import configure_logging
from auditlog.queue import EventQueue
from auditlog.settings import Settings
from auditlog.store.pool import open_pool


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.json = FastJSONProvider(app)
    configure_jwt(app, settings)
    register_error_handlers(app)
    install_request_context(app)

    pool = open_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        name="api",
    )
    app.extensions["auditlog"] = Services(
        settings=settings, pool=pool, queue=EventQueue.from_settings(settings)
    )

    # Before the blueprints: a rule takes the map's setting when it is added.
    app.url_map.strict_slashes = False
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(logs_bp)
    app.register_blueprint(tenants_bp)
    init_stream(app)
    app.register_blueprint(docs_bp)
    lane.install(app)
    return app


def close_app(app: Flask) -> None:
    """Stop what ``create_app`` started: the live-tail listener, the SQS producer's threads,
    the search client and the PostgreSQL pool. gunicorn calls it as each worker exits
    (``infra/gunicorn_conf.py``); left to the garbage collector at interpreter shutdown, the
    pool's threads cannot be joined under gevent and each worker prints a traceback."""
    hub = app.extensions.get(HUB_EXTENSION)
    if hub is not None:
        hub.close()
    app.extensions["auditlog"].close()
