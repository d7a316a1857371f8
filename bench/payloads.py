"""Request bodies: a realistic single event (~0.5 KB) and bulk bodies of N such events."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

ACTIONS = ("CREATE", "UPDATE", "DELETE", "VIEW")
SEVERITIES = ("INFO", "INFO", "INFO", "WARNING", "ERROR")


def event(index: int, rng: random.Random) -> dict[str, Any]:
    return {
        "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "session_id": f"sess-{rng.getrandbits(48):012x}",
        "ip_address": f"203.0.113.{index % 250 + 1}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        "action_type": ACTIONS[index % len(ACTIONS)],
        "resource_type": "document",
        "resource_id": f"doc-{index}",
        "severity": SEVERITIES[index % len(SEVERITIES)],
        "before_state": {"title": "Quarterly report", "shared": False},
        "after_state": {"title": "Quarterly report", "shared": True},
        "metadata": {"request": f"req-{index}", "client": {"name": "bench", "version": "1.0"}},
        "occurred_at": "2026-01-02T03:04:05.678901Z",
    }


def write_bodies(directory: Path, bulk_sizes: list[int], seed: int = 7) -> dict[str, Path]:
    """Write ``single.json`` and ``bulk-<n>.json``; return their paths by key."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"single": directory / "single.json"}
    paths["single"].write_text(json.dumps(event(0, rng), separators=(",", ":")))
    for size in bulk_sizes:
        path = directory / f"bulk-{size}.json"
        events = [event(i, rng) for i in range(size)]
        path.write_text(json.dumps({"events": events}, separators=(",", ":")))
        paths[f"bulk-{size}"] = path
    return paths
