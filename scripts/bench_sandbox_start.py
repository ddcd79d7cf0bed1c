"""What confinement costs a job process's start: N starts of a job process through the runner
(`run_sandboxed`), confined with bubblewrap (`--mode require`) or not (`--mode off`).

    python scripts/bench_sandbox_start.py --mode require --runs 10 [--code "import torch"]

Prints min / median / max seconds of one start-to-exit of the job process. For the whole
process, pair the two modes with farm-bench (docs/security.md quotes both):
    farm-bench -n 10 -- .venv/bin/python scripts/bench_sandbox_start.py --mode require --runs 1 \
        --vs '.venv/bin/python scripts/bench_sandbox_start.py --mode off --runs 1'
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from resonfl.runner import confine, run_sandboxed
from resonfl.runner.confine import Sandbox


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["require", "off"], default="require")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--code", default="import torch", help="what the job process runs")
    args = parser.parse_args()
    confine.configure(Sandbox(mode=args.mode))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            started = time.perf_counter()
            run = run_sandboxed([sys.executable, "-c", args.code], Path(tmp) / str(i), 120)
            times.append(time.perf_counter() - started)
            if run.returncode != 0:
                print(run.log, file=sys.stderr)
                return 1
    print(
        f"mode={args.mode} code={args.code!r} runs={args.runs}: "
        f"min {min(times):.3f} s, median {statistics.median(times):.3f} s, max {max(times):.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
