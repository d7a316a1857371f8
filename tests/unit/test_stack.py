"""The local stack's process handling: a server that dies during start-up is reported with
the tail of its log, and `down` stops only processes whose pidfile `up` wrote."""

import sys
from pathlib import Path

import pytest

from infra import stack


@pytest.fixture
def dev_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(stack, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(stack, "RUN", tmp_path / "run")
    return tmp_path


def test_a_server_that_exits_during_start_up_is_reported_with_its_log(dev_dirs: Path) -> None:
    daemon = stack.Daemon("broken")
    daemon.spawn([sys.executable, "-c", "print('port 9324 already in use'); raise SystemExit(3)"])
    with pytest.raises(stack.StackError) as failure:
        stack.wait_until(lambda: False, 20, "broken", daemon.log, daemon.alive)
    assert "exited during start-up" in str(failure.value)
    assert "port 9324 already in use" in str(failure.value)


def test_a_server_that_never_answers_times_out_with_its_log(dev_dirs: Path) -> None:
    daemon = stack.Daemon("silent")
    daemon.spawn(
        [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(30)"]
    )
    try:
        with pytest.raises(stack.StackError, match=r"did not answer within 1s(.|\n)*starting"):
            stack.wait_until(lambda: False, 1, "silent", daemon.log, daemon.alive)
    finally:
        assert daemon.stop(timeout=5)
    assert daemon.pid() is None
    assert not daemon.pidfile.exists()


def test_down_without_a_pidfile_stops_nothing(dev_dirs: Path) -> None:
    assert stack.Daemon("never-started").stop() is False
