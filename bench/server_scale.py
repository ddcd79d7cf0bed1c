"""Server-side scale (issue 8, item 4): N synthetic sites post ResNet-50 updates for one round.

The real API, aggregator and Redis (as `resonfl up` starts them) with N registered sites but
no site workers: N plain HTTP clients, each with its real site token, post an update (the
site API's raw upload, a different ResNet-50 state dict each) for round 0 of a one-round
FedAvg job, up to 8 at a time. Printed per N: the aggregation time (the aggregator's own
`aggregate_s`: what is left once the last update is in, since the others were folded as
they arrived, during the uploads), the upload wall time, and the peak resident memory
(VmHWM) of the API and of the aggregator process. The fold reads one update at a time, so
the aggregator's peak must not grow with N (about: global model + float64 accumulator + one
update).

    .venv/bin/python bench/server_scale.py [--sites 4,16,64] [--json out/bench/scale.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from rounds import bench_job, free_port  # noqa: E402  (bench/ is on the path above)

from resonfl_server.launcher.local import LocalPlatform  # noqa: E402


class NoWorkers(LocalPlatform):
    """The platform without site workers: the benchmark's HTTP clients are the sites."""

    def start_worker(self, site: str) -> Any:  # type: ignore[override]
        return None


def peak_mb(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_updates(count: int, work: Path) -> list[tuple[Path, str]]:
    """`count` distinct ResNet-50 updates (safetensors) and their sha256; at most 4 files
    on disk, reused round-robin (the server cannot tell, each site posts its own)."""
    import torch  # lazy: torch
    from safetensors.torch import save_file  # lazy: torch

    from model_def import CifarResNet  # bench/ on sys.path

    model = CifarResNet(50)
    files = []
    for i in range(min(count, 4)):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.001 * (i + 1))
        path = work / f"update-{i}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        files.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return [files[i % len(files)] for i in range(count)]


def post(url: str, token: str, job_id: int, update: tuple[Path, str]) -> float:
    path, digest = update
    meta = {"samples": 8, "sha256": digest, "train_s": 0.0, "total_s": 0.0}
    started = time.monotonic()
    with path.open("rb") as body, httpx.Client(timeout=600) as http:
        resp = http.post(
            f"{url}/api/v1/site/jobs/{job_id}/rounds/0/result",
            content=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
                "X-Result-Meta": json.dumps(meta),
            },
        )
    resp.raise_for_status()
    return time.monotonic() - started


def one_size(n: int, work: Path) -> dict[str, Any]:
    from resonfl.client import Client  # after sys.path setup

    plat = NoWorkers(
        data_dir=work / f"platform-{n}",
        port=free_port(),
        sites=n,
        secret_key="bench-secret-" + "x" * 20,
        heartbeat_timeout_s=3600.0,
    )
    try:
        plat.start()
        procs = {c.name: c.proc.pid for c in plat.supervisor.children}
        client = Client(plat.url, plat.admin_token)
        job_id = client.submit(bench_job(50, n, 1).render(work / f"job-{n}"))
        while client.status(job_id)["current_round"] is None:
            time.sleep(0.5)
        updates = make_updates(n, work)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            times = list(
                pool.map(
                    lambda i: post(plat.url, plat.site_tokens[f"site-{i + 1}"], job_id, updates[i]),
                    range(n),
                )
            )
        uploads_s = time.monotonic() - started
        job = client.wait(job_id, progress=False, timeout=1800)
        timings = job["rounds"][0]["timings"]
        return {
            "sites": n,
            "aggregate_s": timings.get("aggregate_s"),
            "uploads_wall_s": uploads_s,
            "upload_median_s": sorted(times)[len(times) // 2],
            "api_peak_mb": peak_mb(procs["api"]),
            "aggregator_peak_mb": peak_mb(procs["aggregator"]),
            "load": os.getloadavg()[0],
        }
    finally:
        plat.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="4,16,64", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "scale.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'N':>4} {'aggregate':>10} {'uploads':>9} {'API peak':>10} {'aggr. peak':>11}  load")
    with tempfile.TemporaryDirectory(prefix="resonfl-scale-") as tmp:
        for n in args.sites:
            row = one_size(n, Path(tmp))
            rows.append(row)
            print(
                f"{n:>4} {row['aggregate_s']:>9.2f}s {row['uploads_wall_s']:>8.1f}s "
                f"{row['api_peak_mb']:>8.0f}MB {row['aggregator_peak_mb']:>9.0f}MB  {row['load']:.1f}"
            )
    growth = rows[-1]["aggregator_peak_mb"] - rows[0]["aggregator_peak_mb"]
    print(
        f"aggregator peak grows {growth:+.0f} MB from N={rows[0]['sites']} to N={rows[-1]['sites']}"
    )
    report = {
        "command": " ".join(["server_scale.py", *(argv or sys.argv[1:])]),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
