"""A small wall-clock stack sampler for every thread of a process (stdlib only).

py-spy is not available here, and cProfile/pyinstrument see one thread at a time, while an
API worker spreads a request over gunicorn's request threads and the producer's collector
and sender threads. Every few milliseconds this reads every thread's stack
(``sys._current_frames()``), drops threads parked in a known idle wait (a socket read, an
idle pool, a condition or event wait, the producer's linger sleep) and counts the rest as
*active*: running Python, waiting for the GIL to run it, or waiting for a contended lock
(those leaves, e.g. logging's handler lock, show up by name). When the worker stops, each
thread's on-CPU time (``/proc/self/task/<tid>/schedstat``, read every 100 ms) is added up
per thread group.

``python -m bench.sampler DIR`` summarises the files a run wrote into DIR.
"""

from __future__ import annotations

import collections
import re
import sys
import threading
from pathlib import Path
from types import FrameType

Key = tuple[tuple[str, str, int], ...]  # (file, function, line) per frame, root first

# Leaf frames that mean "parked": waiting for I/O or for work, not for a contended resource.
IDLE_LEAVES = {
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("selectors.py", "select"),
    ("socket.py", "readinto"),
    ("socket.py", "accept"),
    ("queue.py", "get"),
    ("concurrent/futures/thread.py", "_worker"),  # idle pool thread (work_queue.get in C)
    ("psycopg/waiting.py", "wait_c"),
    ("auditlog/producer.py", "_collect"),  # the linger sleep (packing is in _pack/_chunks)
    ("psycopg_pool/pool.py", "worker"),
}

# Components for the roll-up, by the start of a frame's shortened path (see _short_path).
COMPONENTS = (
    (("botocore/", "boto3/"), "botocore (SQS client)"),
    (("urllib3/",), "urllib3 (SQS HTTP)"),
    (("pydantic/", "pydantic_core/"), "pydantic (event validation)"),
    (("flask_jwt_extended/", "jwt/"), "JWT (flask_jwt_extended + PyJWT)"),
    (("prometheus_client/",), "prometheus_client (metrics)"),
    (("logging/", "auditlog/logs.py"), "logging (JSON access log)"),
    (("json/",), "json"),
    (("psycopg",), "psycopg"),
    (("werkzeug/",), "werkzeug"),
    (("flask/",), "flask"),
    (("gunicorn/",), "gunicorn"),
    (("auditlog/",), "auditlog (own code)"),
    (("api/",), "api (own code)"),
)
_PREFIXES = ("site-packages/", f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/")
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def _short_path(path: str) -> str:
    for prefix in _PREFIXES:
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path.removeprefix(_ROOT)


def _key(frame: FrameType | None) -> Key:
    frames: list[tuple[str, str, int]] = []
    while frame is not None:
        code = frame.f_code
        frames.append((code.co_filename, code.co_name, frame.f_lineno or 0))
        frame = frame.f_back
    return tuple(reversed(frames))


def _label(file: str, function: str, line: int) -> str:
    return f"{function} ({_short_path(file)}:{line})"


def _is_idle(frame: FrameType) -> bool:
    return (_short_path(frame.f_code.co_filename), frame.f_code.co_name) in IDLE_LEAVES


def thread_group(name: str) -> str:
    """gunicorn's request threads are ThreadPoolExecutor-N_M; senders sqs-sender_M, ..."""
    group = re.sub(r"_\d+$", "", name)
    return "gunicorn request threads" if group.startswith("ThreadPoolExecutor") else group


def _schedstat_seconds(native_id: int | None) -> float | None:
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as stat:
            return int(stat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class Sampler:
    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.active: collections.Counter[Key] = collections.Counter()
        self.samples = 0
        # Latest on-CPU seconds per thread (kept after a thread ends), with its group.
        self.thread_cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval_s):
            self.samples += 1
            for ident, frame in sys._current_frames().items():
                if ident != me and not _is_idle(frame):
                    self.active[_key(frame)] += 1
            if self.samples % 20 == 0:
                self._read_thread_cpu()
        self._read_thread_cpu()

    def _read_thread_cpu(self) -> None:
        for thread in threading.enumerate():
            seconds = _schedstat_seconds(thread.native_id)
            if thread.native_id is not None and seconds is not None:
                self.thread_cpu[thread.native_id] = (thread_group(thread.name), seconds)

    def cpu_by_group(self) -> dict[str, float]:
        totals: dict[str, float] = collections.defaultdict(float)
        for group, seconds in self.thread_cpu.values():
            totals[group] += seconds
        return dict(totals)

    def write(self, directory: Path, name: str) -> None:
        """``<name>.folded``: active stacks, ``a;b;c samples`` per line (flamegraph.pl and
        speedscope read it); ``<name>.threads``: ``group<TAB>cpu seconds`` per line."""
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{';'.join(_label(*frame) for frame in key)} {count}"
            for key, count in self.active.most_common()
        ]
        (directory / f"{name}.folded").write_text("\n".join(lines) + "\n")
        threads = sorted(self.cpu_by_group().items(), key=lambda item: -item[1])
        text = "".join(f"{group}\t{seconds:.3f}\n" for group, seconds in threads)
        (directory / f"{name}.threads").write_text(text)


# ---------------------------------------------------------------------------------------
# Summaries of folded files.


def read_folded(paths: list[Path]) -> collections.Counter[tuple[str, ...]]:
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                stack, _, count = line.rpartition(" ")
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _component(label: str) -> str | None:
    path = label.rsplit(" (", 1)[-1]
    for prefixes, name in COMPONENTS:
        if path.startswith(prefixes):
            return name
    return None


def _without_line(label: str) -> str:
    return label.rsplit(":", 1)[0] + ")"


def component_shares(stacks: collections.Counter[tuple[str, ...]]) -> list[tuple[str, float]]:
    """Share of the total with each component anywhere on the stack (inclusive)."""
    total = sum(stacks.values()) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        for name in {c for c in (_component(label) for label in stack) if c}:
            inclusive[name] += count
    return [(name, count / total) for name, count in inclusive.most_common()]


def function_shares(
    stacks: collections.Counter[tuple[str, ...]], top: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(inclusive, self) shares per function, line numbers dropped."""
    total = sum(stacks.values()) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        names = [_without_line(label) for label in stack]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    return (
        [(n, c / total) for n, c in inclusive.most_common(top)],
        [(n, c / total) for n, c in own.most_common(top)],
    )


def _block(title: str, rows: list[tuple[str, float]]) -> list[str]:
    return ["", title, *(f"  {share:6.1%}  {name}" for name, share in rows)]


def read_threads(paths: list[Path]) -> dict[str, float]:
    totals: dict[str, float] = collections.defaultdict(float)
    for path in paths:
        for line in path.read_text().splitlines():
            group, _, seconds = line.partition("\t")
            totals[group] += float(seconds)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def summary(directory: Path, top: int = 25) -> str:
    stacks = read_folded(sorted(directory.glob("*.folded")))
    threads = read_threads(sorted(directory.glob("*.threads")))
    cpu_total = sum(threads.values()) or 1.0
    inclusive, own = function_shares(stacks, top)
    lines = [f"on-CPU seconds per thread group (whole worker life, {cpu_total:.1f} s):"]
    lines += [f"  {s:7.2f} s {s / cpu_total:6.1%}  {g}" for g, s in threads.items()]
    lines += ["", f"active samples: {sum(stacks.values())} (running, wanting the GIL or a lock)"]
    lines += _block("active by component (inclusive):", component_shares(stacks))
    lines += _block("active by function (inclusive):", inclusive)
    lines += _block("active by function (self, the leaf: where threads stood):", own)
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))
