"""`resonfl site`: the site operator's side of site policy, run on the site machine.

    resonfl site jobs [--all]                 jobs awaiting this site's decision
    resonfl site show ID [--file NAME]        the job's six files and who submitted it
    resonfl site approve ID [--reason TEXT]   approve: the job starts once every site agreed
    resonfl site reject ID --reason TEXT      reject: the job fails with this reason

Authenticated with the site's own token (`--token`, `RESONFL_SITE_TOKEN` or the
`resonfl_site_token` file in `RESONFL_SECRETS_DIR`, as the worker reads it) against
`--api` / `RESONFL_API_URL`. The server records every decision with who (`--by`, default
user@host), when and why, and shows it on the job page.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import Any

import httpx

SIX_FILES_ORDER = (
    "meta.json",
    "config_fed_client.json",
    "config_fed_server.json",
    "model_def.py",
    "custom_client_executor.py",
    "custom_persistor.py",
)


def register(subparsers: Any) -> None:
    site = subparsers.add_parser(
        "site", help="site operator: list, inspect, approve or reject jobs (site token)"
    )
    site.add_argument("--api", help="API URL (RESONFL_API_URL)")
    site.add_argument("--token", help="site token (RESONFL_SITE_TOKEN or the secrets file)")
    sub = site.add_subparsers(dest="site_command", required=True)
    jobs = sub.add_parser("jobs", help="jobs awaiting this site's decision")
    jobs.add_argument("--all", action="store_true", help="also the jobs already decided")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show", help="a job's six files and its submitter")
    show.add_argument("job_id", type=int)
    show.add_argument("--file", help="only this file (e.g. model_def.py)")
    for verb in ("approve", "reject"):
        p = sub.add_parser(verb, help=f"{verb} a job awaiting this site")
        p.add_argument("job_id", type=int)
        p.add_argument("--reason", required=verb == "reject", help="why (kept on the server)")
        p.add_argument("--by", help="who decides (default: user@host)")
    site.set_defaults(func=cmd_site)


def cmd_site(args: argparse.Namespace) -> int:
    from resonfl_server.workers.settings import SiteWorkerSettings  # lazy: per command
    from resonfl_server.workers.site.api import SiteAPI  # lazy: per command
    from resonfl_server.workers.site.config import SiteConfig  # lazy: per command

    env = SiteWorkerSettings()
    token = args.token or env.site_token
    if not token:
        print("resonfl site: --token (or RESONFL_SITE_TOKEN) is required", file=sys.stderr)
        return 2
    cfg = SiteConfig(env.site_name or "site", token, args.api or env.api_url, env.worker_data_root)
    api = SiteAPI(cfg, timeout_s=30.0)
    try:
        return COMMANDS[args.site_command](api, args)
    except httpx.HTTPStatusError as exc:
        print(f"resonfl site: {_detail(exc.response)}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"resonfl site: cannot reach {cfg.api_url}: {exc}", file=sys.stderr)
        return 2
    finally:
        api.close()


def _jobs(api: Any, args: argparse.Namespace) -> int:
    rows = api.approvals(include_decided=args.all)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no job awaits this site's decision" + ("" if args.all else " (--all: decided too)"))
        return 0
    table = [("ID", "JOB", "SUBMITTER", "SUBMITTED", "DATASET", "SITES", "DECISION")]
    for r in rows:
        d = r["decision"]
        decision = d["status"] + (f" by {d['operator']}" if d["operator"] else "")
        table.append(
            (
                str(r["job_id"]), r["name"], r["submitter"], r["submitted_at"][:16].replace("T", " "),
                r["dataset"] or "-", ",".join(r["sites"]), decision,
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\nread a job before deciding: resonfl site show ID")
    return 0


def _show(api: Any, args: argparse.Namespace) -> int:
    job = api.files(args.job_id)
    files: dict[str, str] = job["files"]
    if args.file:
        if args.file not in files:
            print(f"resonfl site: --file: one of {', '.join(files)}", file=sys.stderr)
            return 2
        print(files[args.file], end="")
        return 0
    print(f"job {job['id']} {job['name']!r}, submitted by {job['submitter']}\n")
    for name in sorted(files, key=lambda n: (SIX_FILES_ORDER + (n,)).index(n)):
        print(f"===== {name} =====")
        print(files[name].rstrip("\n") + "\n")
    return 0


def _decide(api: Any, args: argparse.Namespace) -> int:
    approve = args.site_command == "approve"
    operator = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    row = api.decide(args.job_id, approve, operator, args.reason)
    print(f"{row['status']} job {args.job_id} at {row['site']} (by {row['operator']})")
    return 0


COMMANDS = {"jobs": _jobs, "show": _show, "approve": _decide, "reject": _decide}


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:500]
    if isinstance(detail, list):  # a validation error: name the field
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail
        )
    elif isinstance(detail, dict):
        detail = detail.get("message") or json.dumps(detail)
    return f"HTTP {response.status_code}: {detail}"
