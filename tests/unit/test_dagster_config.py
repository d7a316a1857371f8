"""The Dagster instance config (infra/dagster/dagster.yaml) loads, and its pool settings are
what keeps retention and the drain apart (README: Retention)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster._core.instance.config import dagster_instance_config

from pipelines.definitions import defs

CONFIG = Path(__file__).resolve().parents[2] / "infra" / "dagster" / "dagster.yaml"


def test_pools_are_enforced_per_run_with_a_limit_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(CONFIG, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://unused@127.0.0.1:1/unused")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "auditlog/drain", "limit": 1} in limits


def test_only_the_drain_and_retention_share_the_audit_logs_pool() -> None:
    graph = defs.resolve_asset_graph()
    in_pool = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if "audit_logs_writes" in (graph.get(key).pools or ())
    }
    assert in_pool == {"audit_events", "retention"}
