"""``make bench``: every benchmark in bench/, one after another, then BENCHMARKS.md.

    .venv/bin/python -m bench.all                 # all of them (about 45 minutes, the
                                                  # soak 10; the first query and search
                                                  # runs load and index 10 M events)
    .venv/bin/python -m bench.all --only ingest,drain
    .venv/bin/python -m bench.all --quick         # every benchmark's smoke-test size

Each benchmark writes bench/results/<name>.json and <name>.md; bench/summary.py then
collects their headline figures into BENCHMARKS.md. A benchmark that fails is reported and
the others still run; the exit status says whether all of them succeeded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import summary  # noqa: E402

# In order: the ingest and drain runs use fresh databases; query reuses its 10 M-row
# database when it is already there (it is kept, `make clean` drops it).
BENCHMARKS = ("ingest", "drain", "stream", "query", "search", "soak")


def available(name: str) -> bool:
    return (ROOT / "bench" / f"{name}.py").exists()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    p.add_argument("--quick", action="store_true", help="each benchmark's --quick size")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}")
    failed: list[str] = []
    for name in chosen:
        if not available(name):
            print(f"[bench] {name}: not written yet (bench/{name}.py missing), skipped")
            continue
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        print(f"[bench] {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            failed.append(name)
            print(f"[bench] {name} FAILED (exit {done.returncode}) after {seconds:.0f} s")
        else:
            print(f"[bench] {name} done in {seconds:.0f} s")
    path = summary.write(ROOT / "BENCHMARKS.md", ROOT / "bench" / "results")
    print(f"[bench] wrote {path.relative_to(ROOT)}")
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
