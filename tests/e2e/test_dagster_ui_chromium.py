"""The Dagster UI in a real browser: headless Chromium (Debian's ``chromium``) opens the
asset graph of the running webserver, which renders it client-side, and the DOM it ends
with names the platform's asset groups (global lineage) and, per group, its assets with
their upstream (``audit_events -> archive -> retention``). A screenshot is kept in
``.dev/dagster-asset-graph.png`` for a human to look at."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from auditlog.settings import Settings
from infra import run as platform

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(".dev/dagster-asset-graph.png")
LOCATION = "pipelines.definitions"
GROUPS = ("ingest", "search", "integrity", "retention")
GROUP_ASSETS = {
    "retention": ("audit_events", "archive", "retention"),
    "integrity": ("audit_events", "integrity_digests"),
    "search": ("audit_events", "search_index"),
}
ASSETS = {name for names in GROUP_ASSETS.values() for name in names}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dagster_ui(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Dagster webserver of this module's own (its own storage database)."""
    server = base_settings.database_url.rsplit("/", 1)[0]
    name = f"dagster_ui_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, not input
    home = tmp_path_factory.mktemp("dagster_home")
    platform.prepare_dagster_home(home)
    port = free_port()
    env = {**os.environ, "DAGSTER_PG_URL": f"{server}/{name}", "DAGSTER_HOME": str(home)}
    logs = tmp_path_factory.mktemp("ui_logs")
    web = platform.spawn("dagster-webserver", platform.dagster_webserver_command(port), env, logs)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/server_info", 120, web)
        yield f"http://127.0.0.1:{port}"
    finally:
        platform.stop_children([web])
        shutil.copytree(logs, Path(".dev/logs/ui-last"), dirs_exist_ok=True)
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url``; the page's scripts get a budget of virtual time, which
    Chromium fast-forwards while it waits on the network, before the DOM or screenshot."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in CI containers; the page is our own, on loopback
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            "--virtual-time-budget=30000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def rendered(page: subprocess.CompletedProcess[str]) -> str:
    assert page.returncode == 0, page.stderr[-2000:]
    assert "<svg" in page.stdout, "the asset graph did not render (no SVG in the DOM)"
    return page.stdout


def test_the_asset_graph_pages_list_the_assets(dagster_ui: str, tmp_path: Path) -> None:
    # The UI's own data source says the same as the pages should (a failure here is the
    # webserver's, not the browser's).
    query = (
        "{ assetNodes { assetKey { path } "
        "assetChecksOrError { ... on AssetChecks { checks { name } } } } }"
    )
    nodes = requests.post(f"{dagster_ui}/graphql", json={"query": query}, timeout=60).json()
    checks = {
        n["assetKey"]["path"][-1]: {c["name"] for c in n["assetChecksOrError"].get("checks", [])}
        for n in nodes["data"]["assetNodes"]
    }
    assert set(ASSETS) <= set(checks)
    # The asset checks show on their assets' pages.
    assert "digests_consistent" in checks["integrity_digests"]
    assert "dead_letter_queue_empty" in checks["audit_events"]
    assert "search_counts_match" in checks["search_index"]
    profile = tmp_path / "profile"

    # The global lineage shows one (collapsed) box per group.
    dom = rendered(chromium(f"{dagster_ui}/asset-groups", profile, "--dump-dom"))
    missing = [g for g in GROUPS if f">{g}<" not in dom]
    assert not missing, f"the global asset graph does not show the groups {missing}"

    # A group's page draws its assets and their upstream: audit_events -> archive -> retention.
    for group, names in GROUP_ASSETS.items():
        url = f"{dagster_ui}/locations/{LOCATION}/asset-groups/{group}"
        dom = rendered(chromium(url, profile, "--dump-dom"))
        missing = [name for name in names if f">{name}<" not in dom]
        assert not missing, f"the {group} group's graph does not show {missing}"

    # The first visit to an instance opens a "join the community" dialog over the graph;
    # its Skip button sends this mutation, which keeps it closed from then on.
    seen = requests.post(
        f"{dagster_ui}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=30
    ).json()
    assert seen["data"]["setNuxSeen"] is True
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    url = f"{dagster_ui}/locations/{LOCATION}/asset-groups/retention"
    shot = chromium(url, profile, f"--screenshot={SCREENSHOT.resolve()}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert SCREENSHOT.stat().st_size > 10_000  # a rendered page, not a blank one
