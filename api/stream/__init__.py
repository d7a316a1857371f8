"""The live tail: ``WS /api/v1/logs/stream``.

A tenant's committed events, in seq order, to browsers and SIEM forwarders. The drain
raises ``NOTIFY audit_events, '<tenant>:<last_seq>'`` in its commit transaction; one
listener per API process (``hub.StreamHub``) fetches the new rows once and fans them out to
the sockets of that process through bounded per-socket buffers (``hub.Subscriber``);
``views`` runs one session per socket (auth, resume from PostgreSQL, live, heartbeats);
``protocol`` holds the parameters, messages and close codes.
"""

from __future__ import annotations

from flask import Flask

from api.stream.hub import StreamHub
from api.stream.views import HUB_EXTENSION, bp


def init_stream(app: Flask) -> None:
    settings = app.extensions["auditlog"].settings
    if settings.stream_heartbeat_seconds <= 0:
        # Pings are what detect dead clients, and the send deadline is two heartbeats.
        raise ValueError("STREAM_HEARTBEAT_SECONDS must be more than 0")
    if settings.stream_buffer_events < 1:
        raise ValueError("STREAM_BUFFER_EVENTS must be at least 1")
    # simple-websocket (under flask-sock) pings every heartbeat and closes a socket whose
    # client did not answer the previous ping: dead peers are found without traffic.
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": settings.stream_heartbeat_seconds,
        "max_message_size": 64 * 1024,  # clients have nothing to send us but close frames
    }
    app.extensions[HUB_EXTENSION] = StreamHub(settings.database_url)
    app.register_blueprint(bp)
