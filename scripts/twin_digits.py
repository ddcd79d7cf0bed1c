"""FL vs its centralized twin on the digits example at Dirichlet 0.1: start a local platform
(4 site workers, `resonfl up`'s own LocalPlatform), submit digits (the example's defaults:
20 rounds x 20 local steps, batch 32), run its centralized twin (1 site, pooled shards,
20 rounds x 80 steps = the same 1,600 optimizer steps), print the gap as Markdown.

    python scripts/twin_digits.py [--alpha 0.1] [--sites 4] [--rounds 20] [--out DIR]

Or against a running server: --server URL --token TOKEN (its sites must be site-1..site-N).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from resonfl.catalog import make_job
from resonfl.client import Client


def run(client: Client, shards: Path, alpha: float, sites: int, rounds: int | None) -> dict[str, Any]:
    job = make_job("digits", sites=sites, num_rounds=rounds, shards_dir=shards, split="dirichlet",
                   alpha=alpha, job_name=f"digits-dirichlet-{alpha:g}")  # fmt: skip
    started = time.monotonic()
    fl_id = client.submit(job)
    client.wait(fl_id, progress=False)
    fl_s = time.monotonic() - started
    twin = client.twin(fl_id)
    started = time.monotonic()
    client.wait(int(twin["id"]), progress=False)
    twin_s = time.monotonic() - started
    cmp = client.twin_comparison(fl_id)
    cmp["wall_s"] = {"fl": fl_s, "twin": twin_s}
    return cmp


def markdown(cmp: dict[str, Any], alpha: float, sites: int) -> str:
    top1 = next(c for c in cmp["curves"] if c["key"] == "global_top1")
    loss = next(c for c in cmp["curves"] if c["key"] == "global_val_loss")
    fl, central = dict(top1["fl"]), dict(top1["central"])
    closed = dict(top1["closed"])
    lines = [
        f"FL job {cmp['job_id']} vs centralized twin job {cmp['twin_id']} (digits, Dirichlet "
        f"alpha {alpha:g}, {sites} sites; twin: {cmp['steps_per_round']} steps per round on "
        f"{cmp['site']}). Global model entering each round, pooled validation split.",
        "",
        "| round | FL top-1 | centralized top-1 | gap (points) | share of gap closed |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(fl):
        c = central.get(r)
        gap = f"{(c - fl[r]) * 100 + 0.0:+.1f}".replace("-0.0", "0.0") if c is not None else "—"
        share = f"{closed[r] * 100:.0f} %" if r in closed else "—"
        lines.append(f"| {r} | {fl[r]:.4f} | {c:.4f} | {gap} | {share} |" if c is not None
                     else f"| {r} | {fl[r]:.4f} | — | — | {share} |")  # fmt: skip
    lines += [
        "",
        f"Gap at round {top1['gap_round']}: top-1 {top1['gap'] * 100:+.1f} points, val loss "
        f"{loss['gap']:+.4f} (centralized - FL). Wall time on this machine (not a benchmark): "
        f"FL {cmp['wall_s']['fl']:.0f} s, twin {cmp['wall_s']['twin']:.0f} s.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=None, help="default: the example's 20")
    parser.add_argument("--server")
    parser.add_argument("--token")
    parser.add_argument("--out", type=Path, default=None, help="data folder (default: a temp one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="resonfl-twin-"))
    if args.server:
        cmp = run(Client(args.server, args.token), out / "shards", args.alpha, args.sites, args.rounds)
    else:
        from resonfl_server.launcher.local import LocalPlatform  # lazy: only without --server
        from resonfl_server.launcher.supervise import free_port  # lazy: only without --server

        plat = LocalPlatform(data_dir=out / "platform", port=free_port(), sites=args.sites,
                             secret_key="twin-digits")  # fmt: skip
        plat.start()
        try:
            client = Client(plat.url, plat.admin_token)
            cmp = run(client, out / "shards", args.alpha, args.sites, args.rounds)
        finally:
            plat.stop()
    print(markdown(cmp, args.alpha, args.sites))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
