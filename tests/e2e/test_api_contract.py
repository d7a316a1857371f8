"""The API keeps the contract it publishes: schemathesis generates requests from
api/openapi.yaml (valid and invalid ones) and sends them to the API running under gunicorn,
against a fresh database and queues of this module's own; a `user` token for the tenant's
events, an `admin` token for the tenants endpoints.

Checks on every response: no 5xx (``not_a_server_error``), the status code is documented
(``status_code_conformance``), so is the media type (``content_type_conformance``), the body
matches the documented schema (``response_schema_conformance``), and the documented
required headers are there (``response_headers_conformance``: Location, Retry-After,
WWW-Authenticate). Then a stateful run follows the document's links (create an event → read
it; create a tenant → read / change it; list → read), with the document as the live API
serves it at /api/v1/openapi.json.

Bounded and repeatable: a fixed seed, a few examples per operation, no example database
(about 15 s). No Dagster here: an accepted event is not drained, so reading it back answers
404, which is documented (the walking skeleton covers the drain). Every failure fails the
test: nothing is filtered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import hypothesis
import psycopg
import pytest
import requests
import schemathesis
from schemathesis import AuthContext, Case

from api.docs import load_spec
from auditlog.queue import ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from infra import run as platform

pytestmark = pytest.mark.e2e

SEED = 20240501
MAX_EXAMPLES = 25  # fuzzing examples per operation (the example and coverage phases add some)
STATEFUL_SCENARIOS = 25
STATEFUL_STEPS = 6
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


@dataclass(frozen=True)
class LiveApi:
    url: str
    settings: Settings
    tenant_id: uuid.UUID
    user_token: str  # role `user` in tenant_id: ingest and read
    admin_token: str  # role `admin`, no tenant: the tenants endpoints
    tenant_admin_token: str  # role `admin` in tenant_id: cleanup and redaction

    def token(self, path: str) -> str:
        """The token an operation of the document is called with."""
        return {
            "admin": self.admin_token,
            "tenant-admin": self.tenant_admin_token,
            "user": self.user_token,
        }[role_for(path)]


def role_for(path: str) -> str:
    if path.startswith("/api/v1/tenants"):
        return "admin"
    if path.startswith("/api/v1/logs/cleanup"):
        return "tenant-admin"  # nothing is drained here, so there is nothing to delete
    return "user"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_execute(admin_url: str, statement: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement.encode())  # the database names below are ours, not input


@pytest.fixture(scope="module")
def live_api(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    """gunicorn serving ``api:create_app()`` on a free port, with its own database and
    queues; a tenant in it and tokens for it. Fails (never skips) when a server is missing."""
    suffix = uuid.uuid4().hex[:10]
    server = base_settings.database_url.rsplit("/", 1)[0]
    admin_url = f"{server}/postgres"
    database = f"auditlog_contract_{suffix}"
    _admin_execute(admin_url, f'CREATE DATABASE "{database}"')
    settings = replace(
        base_settings,
        database_url=f"{server}/{database}",
        sqs_queue_name=f"contract-events-{suffix}",
        sqs_dlq_name=f"contract-events-dlq-{suffix}",
    )
    sqs = make_sqs_client(settings)
    logs = tmp_path_factory.mktemp("contract_logs")
    children: list[platform.Child] = []
    try:
        migrate(settings.database_url)
        ensure_queues(
            sqs, settings.sqs_queue_name, settings.sqs_dlq_name, settings.sqs_max_receive_count
        )
        with connect(settings.database_url) as conn:
            tenant = uuid.UUID(str(create_tenant(conn, name="contract")["id"]))
            conn.commit()
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "SQS_QUEUE_NAME": settings.sqs_queue_name,
            "SQS_DLQ_NAME": settings.sqs_dlq_name,
            "LOG_LEVEL": "WARNING",
        }
        children.append(platform.spawn("api", platform.api_command(port, workers=1), env, logs))
        platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, children[0])
        yield LiveApi(
            url=f"http://127.0.0.1:{port}",
            settings=settings,
            tenant_id=tenant,
            user_token=mint_token(settings, tenant_id=tenant, role="user", subject="contract"),
            admin_token=mint_token(settings, tenant_id=None, role="admin", subject="contract"),
            tenant_admin_token=mint_token(
                settings, tenant_id=tenant, role="admin", subject="contract"
            ),
        )
    finally:
        platform.stop_children(children)
        for name in (settings.sqs_queue_name, settings.sqs_dlq_name):
            with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        # The API's log of the last run, for reading a failure (small; .dev is not tracked).
        shutil.copytree(logs, Path(".dev/logs/contract-last"), dirs_exist_ok=True)


def _config() -> schemathesis.Config:
    """Seeded, small, no example database; only the contract checks; stateful runs follow
    the document's own links (no inferred ones)."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",  # valid and invalid requests
                "max-examples": MAX_EXAMPLES,
                "database": "none",  # nothing written to .hypothesis/, no replay of old runs
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS, "inference": {"algorithms": []}}},
            "request-timeout": 30,
        }
    )


# The document as the package ships it (no server needed to collect the tests); the run
# below sends its cases to the live API. (schemathesis.pytest.from_fixture would load it
# from the server, but its lazy loader does not work with pytest 9.2.)
schema = schemathesis.openapi.from_dict(load_spec(), config=_config())


ROLE_PLACEHOLDER = "Bearer role:"


@schema.auth(refresh_interval=None, retry_on=[]).apply_to(path_regex="^/api/v1/(logs|tenants)")
class _RoleAuth:
    """Which token an operation gets (``role_for``: admin, tenant-admin or user). Cases
    are generated (some at collection) before the API runs, so the header holds a
    placeholder naming the role, swapped for the live API's token just before the call.
    Cases in which schemathesis negates the security parameter (the 401 checks) get no
    placeholder and keep whatever was generated."""

    def get(self, case: Case, context: AuthContext) -> str:
        return role_for(case.path)

    def set(self, case: Case, data: str, context: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"{ROLE_PLACEHOLDER}{data}"}


@schema.parametrize()
def test_every_operation_keeps_the_documented_contract(case: Case, live_api: LiveApi) -> None:
    sent = (case.headers or {}).get("Authorization", "")
    if sent.startswith(ROLE_PLACEHOLDER):
        case.headers["Authorization"] = f"Bearer {live_api.token(case.path)}"
    case.call_and_validate(base_url=live_api.url)


def test_linked_operations_keep_the_contract_statefully(live_api: LiveApi) -> None:
    """Sequences along the document's links: POST /api/v1/logs → GET /api/v1/logs/{id};
    POST /api/v1/tenants → GET / PATCH /api/v1/tenants/{id}; list → get. The document is
    loaded from the live API here, so this also checks what /api/v1/openapi.json serves."""
    served = schemathesis.openapi.from_url(
        f"{live_api.url}/api/v1/openapi.json", config=_config(), timeout=30
    )
    served.validate()
    assert served.raw_schema == load_spec()

    class Workflow(served.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            token = live_api.token(case.path)
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}

    Workflow.run(
        settings=hypothesis.settings(
            Workflow.TestCase.settings,
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
        )
    )


def test_documented_example_round_trip(live_api: LiveApi) -> None:
    """The document's own example event is accepted and Location names its URL, so the
    stateful run above has something real to follow."""
    document = requests.get(f"{live_api.url}/api/v1/openapi.json", timeout=10).json()
    operation = document["paths"]["/api/v1/logs"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    response = requests.post(
        f"{live_api.url}/api/v1/logs",
        json=example,
        headers={"Authorization": f"Bearer {live_api.user_token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/api/v1/logs/{response.json()['id']}"
