"""gunicorn hooks (``-c bench/gunicorn_profile.py``): sample each worker's stacks while it
runs and write them, folded, to $BENCH_PROFILE_DIR/worker-<pid>.{folded,threads} when it exits."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.sampler import Sampler

_sampler: Sampler | None = None


def post_worker_init(worker: Any) -> None:
    global _sampler
    _sampler = Sampler()
    _sampler.start()


def worker_exit(server: Any, worker: Any) -> None:
    if _sampler is None:
        return
    _sampler.stop()
    out = Path(os.environ.get("BENCH_PROFILE_DIR", "."))
    _sampler.write(out, f"worker-{os.getpid()}")
