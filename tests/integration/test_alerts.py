"""The run-failure sensor on a real failed Dagster run: it POSTs a JSON alert to a real
local HTTP server (ALERT_WEBHOOK_URL) and always writes a structured log line; a webhook
that answers 500 is reported and does not silence the log line."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    asset,
    build_run_status_sensor_context,
    materialize,
)

from auditlog.alerts import WebhookAlertHook, dispatch
from pipelines.alerts import alert_on_run_failure


class Receiver(HTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/alerts"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def alert_log() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("auditlog.alerts")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@asset(name="fails_on_purpose")
def fails_on_purpose() -> None:
    raise RuntimeError("the archive did not verify")


def fail_and_alert() -> str:
    with DagsterInstance.ephemeral() as instance:
        result = materialize([fails_on_purpose], instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        [failure] = instance.get_records_for_run(
            result.run_id, of_type=DagsterEventType.RUN_FAILURE
        ).records
        assert failure.event_log_entry.dagster_event is not None
        context = build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=failure.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        alert_on_run_failure(context)
        return result.run_id


def test_a_failed_run_is_posted_to_the_webhook_and_logged(
    receiver: Receiver, alert_log: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    run_id = fail_and_alert()

    [(content_type, alert)] = receiver.posts
    assert content_type == "application/json"
    assert alert["event"] == "dagster.run_failed"
    assert alert["run_id"] == run_id
    assert alert["job"] == "__ephemeral_asset_job__"
    assert alert["status"] == "FAILURE"
    assert "fails_on_purpose" in alert["message"]
    [line] = alert_log.records
    assert (line.levelname, line.getMessage()) == ("ERROR", "alert.run_failed")
    assert line.alert == alert  # type: ignore[attr-defined]


def test_without_a_webhook_the_log_line_is_the_alert(
    receiver: Receiver, alert_log: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    run_id = fail_and_alert()
    assert receiver.posts == []
    [line] = alert_log.records
    assert line.alert["run_id"] == run_id  # type: ignore[attr-defined]


def test_a_failing_hook_is_reported_and_the_others_still_run(
    receiver: Receiver, alert_log: Captured
) -> None:
    receiver.status = 500
    logged: list[dict[str, Any]] = []

    class Remember:
        def send(self, alert: dict[str, Any]) -> None:
            logged.append(alert)

    failures = dispatch({"event": "x"}, [WebhookAlertHook(receiver.url), Remember()])
    assert len(receiver.posts) == 1
    assert logged == [{"event": "x"}]
    assert len(failures) == 1
    assert failures[0].startswith("WebhookAlertHook: HTTP Error 500")
    assert [r.getMessage() for r in alert_log.records] == ["alert.hook_failed"]
