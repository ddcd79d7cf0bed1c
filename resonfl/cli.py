"""The `resonfl` command: job folders, the local simulator, and the platform client."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from resonfl.job import JobValidationError


def _die(message: str, code: int = 2) -> int:
    print(f"resonfl: error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ job folders
def cmd_examples(args: argparse.Namespace) -> int:
    from resonfl.catalog import list_examples

    for ex in list_examples():
        print(f"{ex.name:<10} {ex.description}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from resonfl.catalog import make_job

    target = Path(args.dir)
    if target.exists() and any(target.iterdir()) and not args.force:
        return _die(f"{target} is not empty (use --force to render into it)")
    target.mkdir(parents=True, exist_ok=True)
    job = make_job(
        args.example,
        sites=args.sites,
        num_rounds=args.rounds,
        shards_dir=target / "shards",
        split=args.split,
        alpha=args.alpha,
        seed=args.seed,
    )
    job.render(target)
    print(f"rendered {args.example!r} job with {len(job.federation.sites)} sites into {target}")
    print(f"next: resonfl simulate {target} --sites {len(job.federation.sites)}")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from resonfl.catalog.shards import make_shards

    shards = make_shards(
        args.example, Path(args.out), args.sites, split=args.split, alpha=args.alpha, seed=args.seed
    )
    for site, path in shards.items():
        print(f"{site}: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from resonfl.job import Job

    job = Job.load(args.dir)
    fed = job.federation
    print(
        f"ok: {job.name!r}, {fed.num_rounds} rounds, sites {', '.join(fed.sites)}, "
        f"min_clients {fed.effective_min_clients}, aggregator {fed.aggregator_path}"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from resonfl.simulate import SimulationError, simulate

    workspace = Path(args.workspace) if args.workspace else Path(args.dir) / "workspace"
    try:
        result = simulate(
            args.dir,
            workspace,
            sites=args.sites,
            num_rounds=args.rounds,
            progress=not args.quiet,
            parallel=args.parallel,
        )
    except SimulationError as exc:
        return _die(str(exc), 1)
    print(f"global models: {workspace / 'files_out'}")
    print(f"final checkpoint: {result.checkpoint}")
    return 0


# ------------------------------------------------------------------ platform client
def _client(args: argparse.Namespace) -> Any:
    from resonfl.client import Client

    url = args.server or os.environ.get("RESONFL_SERVER", "http://127.0.0.1:8000")
    token = args.token or os.environ.get("RESONFL_TOKEN")
    if not token:
        raise SystemExit(_die("no API token: pass --token or set RESONFL_TOKEN"))
    return Client(url, token)


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job_id = client.submit(Path(args.dir))
    print(job_id)
    if args.wait:
        client.wait(job_id, progress=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = _client(args).status(args.job_id)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    path = _client(args).download(args.job_id, args.output, round=args.round)
    print(path)
    return 0


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="API URL (default $RESONFL_SERVER or http://127.0.0.1:8000)")
    p.add_argument("--token", help="API token (default $RESONFL_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resonfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("examples", help="list the example catalog")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("init", help="render an example job folder with data shards")
    p.add_argument("--example", required=True)
    p.add_argument("dir")
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--split", choices=["iid", "dirichlet"], default="dirichlet")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("shards", help="split an example's data set into per-site shards")
    p.add_argument("--example", required=True)
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--split", choices=["iid", "dirichlet"], default="dirichlet")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("validate", help="check a job folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("simulate", help="run a job folder locally, one process per site")
    p.add_argument("dir")
    p.add_argument("--sites", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument(
        "--workspace",
        help="output folder (default DIR/workspace); a new run replaces the previous run there",
    )
    p.add_argument("--parallel", type=int, default=None, help="site processes at once")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("submit", help="submit a job folder to a ResonFL server")
    p.add_argument("dir")
    p.add_argument("--wait", action="store_true", help="wait with a progress bar")
    _client_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show a job's status, rounds and metrics")
    p.add_argument("job_id")
    _client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("download", help="download a job's final (or a round's) checkpoint")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--round", type=int, default=None)
    _client_flags(p)
    p.set_defaults(func=cmd_download)

    _register_platform_commands(sub)
    return parser


def _register_platform_commands(sub: Any) -> None:
    """Add `up`, `worker`, `aggregator`, `api`, ... from the launcher (same distribution).

    The launcher sits above the server packages, which sit above this SDK: the SDK must not
    import it at module level, so the `resonfl` command reaches up only here, at parse time.
    `launcher.commands` imports only the standard library at module level, so this works
    without the server extras; each command imports what it runs.
    """
    from launcher import commands  # lazy: the one arrow from the SDK up to the launcher

    commands.register(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JobValidationError as exc:
        return _die(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The client's errors (refused job, unknown id, failed job, server down) are
        # messages for the user, not tracebacks.
        import httpx

        if isinstance(exc, httpx.TransportError):
            return _die(f"cannot reach the server: {exc}", 1)
        if type(exc).__name__ in ("ApiError", "JobFailed") or isinstance(exc, OSError):
            return _die(_client_error(exc, args), 1)
        raise


def _client_error(exc: Exception, args: argparse.Namespace) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict) and {"file", "message"} <= detail.keys():
        field = f": {detail['field']}" if detail.get("field") else ""
        return f"{detail['file']}{field}: {detail['message']}"
    if getattr(exc, "status", None) == 404 and getattr(args, "job_id", None):
        return f"job {args.job_id} not found (or not yours)"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
