"""Operator alerts: pluggable hooks that tell someone a pipeline run failed.

Every alert is always written as one structured log line (``alert.run_failed`` at ERROR);
with ``ALERT_WEBHOOK_URL`` set it is also POSTed there as JSON (Slack/Teams/PagerDuty-style
incoming webhooks, or any HTTP receiver). More hooks are classes with a ``send`` method.
A hook that fails is logged and does not stop the others.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from auditlog.settings import Settings

log = logging.getLogger("auditlog.alerts")


class AlertHook(Protocol):
    def send(self, alert: dict[str, Any]) -> None: ...


class LogAlertHook:
    """The alert as a structured log line (always on)."""

    def send(self, alert: dict[str, Any]) -> None:
        log.error("alert.run_failed", extra={"alert": alert})


class WebhookAlertHook:
    """POST the alert as JSON; a non-2xx answer or a network error raises."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("ALERT_WEBHOOK_URL must be an http(s) URL")
        self.url, self.timeout = url, timeout

    def send(self, alert: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self.url,
            data=json.dumps(alert).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "auditlog-alerts/1"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"alert webhook answered {response.status}")


def alert_hooks(settings: Settings) -> list[AlertHook]:
    hooks: list[AlertHook] = [LogAlertHook()]
    if settings.alert_webhook_url:
        hooks.append(WebhookAlertHook(settings.alert_webhook_url))
    return hooks


def dispatch(alert: dict[str, Any], hooks: Sequence[AlertHook]) -> list[str]:
    """Send to every hook; returns the failures (one line each), which are logged too."""
    failures = []
    for hook in hooks:
        try:
            hook.send(alert)
        except Exception as exc:  # noqa: BLE001 (one hook's failure must not silence the rest)
            failures.append(f"{type(hook).__name__}: {exc}")
            log.warning("alert.hook_failed", extra={"hook": type(hook).__name__, "error": str(exc)})
    return failures
