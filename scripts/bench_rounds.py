"""How long a round takes on the platform, and how much of it is overhead beyond training.

Brings the platform up with `LocalPlatform` (what `resonfl up` runs: API, aggregator, N site
workers; embedded Redis and SQLite unless URLs are given), submits the digits example through
the SDK, and prints each round's wall time, the slowest site's training time and the rest
(platform overhead: job process hand-off, weights over HTTP, aggregation, dispatch). Then runs
the same job folder in the local simulator for comparison.

    python scripts/bench_rounds.py [--sites 2] [--rounds 5] [--local-steps 20]
        [--redis-url redis://127.0.0.1:6379/5] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def platform_rounds(args: argparse.Namespace, work: Path, job_dir: Path) -> list[dict[str, Any]]:
    from resonfl.client import Client
    from resonfl.job import Job
    from launcher.local import LocalPlatform

    plat = LocalPlatform(
        data_dir=work / "platform",
        port=free_port(),
        sites=args.sites,
        redis_url=args.redis_url,
        database_url=args.database_url,
        secret_key="bench-secret-" + "x" * 20,
    )
    try:
        plat.start()
        client = Client(plat.url, plat.admin_token)
        job_id = client.submit(Job.load(job_dir))
        started = time.monotonic()
        job = client.wait(job_id, progress=False)
        total = time.monotonic() - started
    finally:
        plat.stop()
    rows = [{"round": r["number"], **r["timings"]} for r in job["rounds"]]
    print(f"\nplatform: job {job_id} {job['status']} in {total:.1f} s")
    print("round  round_s  train_s(slowest site)  overhead_s  share  (in site task / between tasks)")
    for t in rows:
        share = t["overhead_s"] / t["round_s"] if t["round_s"] else 0.0
        print(
            f"{t['round']:>5}  {t['round_s']:7.2f}  {t['train_s_max']:21.2f}  "
            f"{t['overhead_s']:10.2f}  {share:5.0%}  "
            f"({t.get('site_overhead_s', 0):.2f} / {t.get('transport_s', 0):.2f})"
        )
    steady = rows[1:] or rows  # round 0 includes the sites' first bundle download
    med_round = statistics.median(t["round_s"] for t in steady)
    med_over = statistics.median(t["overhead_s"] for t in steady)
    print(
        f"median (rounds 1+): round {med_round:.2f} s, overhead {med_over:.2f} s "
        f"({med_over / med_round:.0%} of the round)"
    )
    return rows


def simulator_rounds(work: Path, job_dir: Path) -> None:
    from resonfl.simulate import simulate

    result = simulate(job_dir, work / "sim", progress=False)
    walls = [r.wall_s for r in result.rounds]
    trains = [r.train_s for r in result.rounds]
    print(
        f"\nsimulator (same job, one job process per site, kept across rounds): median round "
        f"{statistics.median(walls[1:] or walls):.2f} s, slowest site's training "
        f"{statistics.median(trains[1:] or trains):.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-simulator", action="store_true")
    args = parser.parse_args(argv)

    from resonfl.catalog import make_job

    with tempfile.TemporaryDirectory(prefix="resonfl-bench-") as tmp:
        work = Path(tmp)
        job_dir = work / "job"
        make_job(
            "digits", sites=args.sites, num_rounds=args.rounds, shards_dir=job_dir / "shards",
            local_steps=args.local_steps,
        ).render(job_dir)
        print(
            f"digits, {args.sites} sites, {args.rounds} rounds x {args.local_steps} local steps"
        )
        platform_rounds(args, work, job_dir)
        if not args.no_simulator:
            simulator_rounds(work, job_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
