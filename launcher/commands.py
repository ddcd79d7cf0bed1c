"""`resonfl worker`, `resonfl aggregator` and `resonfl up`.

resonfl worker --site NAME --token T --api URL --broker URL [--data-root P] [--gpus 0,1]
resonfl aggregator [--reconcile-every S] [--concurrency N]
resonfl up [--port 8000] [--sites 2] [--data-dir D] [--redis-url U] [--database-url U] [--demo]
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

from resonfl_server.launcher import site_commands

log = logging.getLogger("resonfl.launcher")

CELERY_QUIET = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
UNSAFE_HELP = (
    "run job code WITHOUT the bubblewrap sandbox (it can then read everything this process "
    "can); only where bwrap cannot run and every job author is trusted"
)


def configure_sandbox(unsafe_no_sandbox: bool, role: str) -> None:
    """Confine every job process this process starts (docs/security.md); say loudly when
    the operator turned it off, and clearly when this machine cannot do it."""
    from resonfl.runner import confine  # lazy: per command
    from resonfl_server.workers.settings import SandboxSettings  # lazy: per command

    sandbox = SandboxSettings().to_sandbox(unsafe_no_sandbox)
    confine.configure(sandbox)
    problem = None if unsafe_no_sandbox else sandbox.problem()
    if problem:
        log.error(
            "%s: job code will be REFUSED: bubblewrap cannot run here (%s). Install it "
            "(apt-get install bubblewrap) or start with --unsafe-no-sandbox.",
            role,
            problem,
        )
    elif not unsafe_no_sandbox:
        log.info("%s: job code runs confined: %s", role, sandbox.describe())


def register(subparsers: Any) -> None:
    """Add the platform's subcommands to the `resonfl` CLI."""
    w = subparsers.add_parser("worker", help="run a site worker (consumes only site.<NAME>)")
    w.add_argument("--site", help="site name (RESONFL_SITE_NAME)")
    w.add_argument("--token", help="site token (RESONFL_SITE_TOKEN; prefer the variable)")
    w.add_argument("--api", help="API URL (RESONFL_API_URL)")
    w.add_argument("--broker", help="Redis URL (RESONFL_BROKER_URL)")
    w.add_argument(
        "--data-root", type=Path, help="bundles, shards, state (RESONFL_WORKER_DATA_ROOT)"
    )
    w.add_argument("--gpus", help="GPU indices this worker may use, e.g. 0,1 ('' for none)")
    w.add_argument("--heartbeat", type=float, help="seconds between heartbeats")
    w.add_argument("--threads", type=int, help="CPU threads per job process")
    w.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=/folder[:format]",
        help="a dataset this site holds (repeatable); format: image-folder, npz, csv, files "
        "(default: guessed). Job code sees it read-only as DATA_ROOT",
    )
    w.add_argument(
        "--settings",
        type=Path,
        help="TOML settings file: [datasets.NAME] and [policy] (RESONFL_SITE_SETTINGS)",
    )
    w.add_argument(
        "--require-approval",
        action="store_true",
        help="every job waits for `resonfl site approve` on this machine (policy)",
    )
    w.add_argument("--unsafe-no-sandbox", action="store_true", help=UNSAFE_HELP)
    w.set_defaults(func=cmd_worker)

    a = subparsers.add_parser(
        "aggregator", help="run the server tasks: start, aggregate, reconcile"
    )
    a.add_argument("--reconcile-every", type=float, default=15.0, help="seconds (default 15)")
    a.add_argument("--concurrency", type=int, default=2, help="task threads (default 2)")
    a.add_argument("--unsafe-no-sandbox", action="store_true", help=UNSAFE_HELP)
    a.set_defaults(func=cmd_aggregator)

    api = subparsers.add_parser("api", help="run the API server (uvicorn) from RESONFL_* settings")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--migrate", action="store_true", help="apply migrations first")
    api.add_argument("--workers", type=int, default=1)
    api.set_defaults(func=cmd_api)

    m = subparsers.add_parser("migrate", help="bring the job store to the newest schema")
    m.set_defaults(func=cmd_migrate)

    bk = subparsers.add_parser(
        "backup", help="write the job store and the artifact folder to one archive"
    )
    bk.add_argument("archive", type=Path, help="file to write, e.g. resonfl-2026-11-29.tar")
    bk.add_argument("--data-dir", type=Path, default=None, help="default RESONFL_DATA_DIR")
    bk.set_defaults(func=cmd_backup)

    rt = subparsers.add_parser(
        "restore", help="restore a backup into an empty deployment, then migrate it"
    )
    rt.add_argument("archive", type=Path)
    rt.add_argument("--data-dir", type=Path, default=None, help="default RESONFL_DATA_DIR")
    rt.set_defaults(func=cmd_restore)

    rs = subparsers.add_parser("register-site", help="register a site (or rotate its token)")
    rs.add_argument("name")
    rs.set_defaults(func=cmd_register_site)

    ad = subparsers.add_parser("create-admin", help="create the admin and print an API token")
    ad.add_argument("--email", default="admin@localhost")
    ad.set_defaults(func=cmd_create_admin)

    sp = subparsers.add_parser("set-password", help="set a user's browser sign-in password")
    sp.add_argument("email")
    sp.add_argument("--data-dir", type=Path, default=None, help="the data dir `resonfl up` used")
    sp.add_argument("--password", default=None, help="default: ask (not echoed)")
    sp.set_defaults(func=cmd_set_password)

    site_commands.register(subparsers)

    u = subparsers.add_parser("up", help="bring the whole platform up on this machine")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8000)
    u.add_argument("--sites", type=int, default=2, help="local site workers (site-1..site-N)")
    u.add_argument("--data-dir", type=Path, default=None, help="default ./resonfl-data")
    u.add_argument("--redis-url", default=None, help="default: start the embedded redis-server")
    u.add_argument("--database-url", default=None, help="default: SQLite in the data folder")
    u.add_argument("--admin-email", default="admin@localhost")
    u.add_argument("--demo", action="store_true", help="submit the digits example and wait")
    u.add_argument("--demo-rounds", type=int, default=None)
    u.add_argument("--exit-after-demo", action="store_true", help="stop everything when done")
    u.add_argument(
        "--site-dataset",
        action="append",
        default=[],
        metavar="SITE:NAME=/folder[:format]",
        help="a dataset a local site worker holds (repeatable; its --dataset)",
    )
    u.add_argument(
        "--site-approval",
        action="append",
        default=[],
        metavar="SITE",
        help="this local site's operator approves each job (repeatable; --require-approval)",
    )
    u.add_argument(
        "--site-settings",
        action="append",
        default=[],
        metavar="SITE=FILE",
        help="a local site's settings file: datasets and policy (repeatable; --settings)",
    )
    u.add_argument("--unsafe-no-sandbox", action="store_true", help=UNSAFE_HELP)
    u.set_defaults(func=cmd_up)


# ------------------------------------------------------------------------------ worker
def cmd_worker(args: argparse.Namespace) -> int:
    from resonfl_server.workers.settings import SiteWorkerSettings, parse_gpus  # lazy: per command
    from resonfl_server.workers.site import config as site_config  # lazy: per command
    from resonfl_server.workers.site.heartbeat import Heartbeat  # lazy: per command
    from resonfl_server.workers.site.processes import prewarm  # lazy: per command
    from resonfl_server.workers.celery_app import (
        make_celery,
        register_tasks,
        site_queue,
    )  # lazy: per command

    env = SiteWorkerSettings()
    cfg = site_config.SiteConfig.from_settings(env)
    cfg.site = args.site or cfg.site
    cfg.token = args.token or cfg.token
    cfg.api_url = args.api or cfg.api_url
    cfg.data_root = (args.data_root or cfg.data_root).resolve()
    if args.gpus is not None:
        cfg.gpus = parse_gpus(args.gpus)
    cfg.heartbeat_s = args.heartbeat or cfg.heartbeat_s
    cfg.threads = args.threads
    if not cfg.site or not cfg.token:
        print(
            "resonfl worker: --site and --token (or RESONFL_SITE_NAME/TOKEN) are required",
            file=sys.stderr,
        )
        return 2
    try:
        site_config.declare(
            cfg, args.settings or env.site_settings, args.dataset, args.require_approval
        )
    except ValueError as exc:  # DatasetError / PolicyError: the message names the culprit
        print(f"resonfl worker: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for report in cfg.reports:
        log.info(
            "site %s: dataset %s (%s): %d samples%s",
            cfg.site,
            report.name,
            report.format,
            report.samples,
            f", {len(report.labels)} labels" if report.labels else "",
        )
    log.info("site %s: policy %s", cfg.site, cfg.policy.as_dict())
    configure_sandbox(args.unsafe_no_sandbox, f"site worker {cfg.site}")
    cfg.data_root.mkdir(parents=True, exist_ok=True)
    site_config.install(cfg)
    prewarm(cfg)
    app = make_celery(args.broker or env.broker_url)
    register_tasks(app, "site")
    beat = Heartbeat(cfg)
    beat.beat()
    beat.start()
    try:
        app.worker_main(
            [
                "worker",
                "-Q",
                site_queue(cfg.site),
                "-P",
                "solo",
                "-c",
                "1",
                "-n",
                f"{cfg.site}@%h",
                "-l",
                "INFO",
                *CELERY_QUIET,
            ]
        )
    finally:
        beat.stop()
    return 0


# ------------------------------------------------------------------------------ aggregator
def _preimport_fl_core() -> None:
    """Import torch and the FL core now, off the main thread: the first aggregation would
    otherwise pay it (several seconds on a small machine; seen as round 1's aggregate_s)."""
    import resonfl.fl.rounds  # noqa: F401 - imported for its side effect: loaded and cached
    import resonfl.fl.shareable  # noqa: F401
    import resonfl.templates.custom_persistor  # noqa: F401


def cmd_aggregator(args: argparse.Namespace) -> int:
    from resonfl_server.backend.core.config import Settings  # lazy: per command
    from resonfl.runner import WarmInit  # lazy: per command
    from resonfl_server.workers import runtime  # lazy: per command
    from resonfl_server.workers.celery_app import SERVER_QUEUE, register_tasks  # lazy: per command

    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # until Celery takes over
    configure_sandbox(args.unsafe_no_sandbox, "aggregator")  # it runs the initial-weights job code
    rt = runtime.ServerRuntime.from_settings(settings)
    # before any job arrives: the first job's initial weights do not pay Python + torch
    rt.warm_init = WarmInit(rt.store.tmp / "warm-init")
    runtime.install(rt)
    register_tasks(rt.dispatcher.app, "server")
    threading.Thread(target=_preimport_fl_core, name="preimport", daemon=True).start()
    loop = ReconcileLoop(rt, args.reconcile_every)
    loop.start()
    try:
        rt.dispatcher.app.worker_main(
            [
                "worker",
                "-Q",
                SERVER_QUEUE,
                "-P",
                "threads",
                "-c",
                str(args.concurrency),
                "-n",
                "aggregator@%h",
                "-l",
                "INFO",
                *CELERY_QUIET,
            ]
        )
    finally:
        loop.stop()
        rt.warm_init.close()
    return 0


class ReconcileLoop(threading.Thread):
    """`rounds.reconcile` once at start (resume after a restart), then every `every_s`."""

    def __init__(self, rt: Any, every_s: float) -> None:
        super().__init__(name="resonfl-reconcile", daemon=True)
        self.rt, self.every_s = rt, every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        from resonfl_server.backend.services import rounds  # lazy: per command

        while not self.stopped.is_set():
            try:
                with self.rt.session() as session:
                    report = rounds.reconcile(
                        session,
                        self.rt.store,
                        self.rt.dispatcher,
                        heartbeat_timeout_s=self.rt.settings.site_heartbeat_timeout_s,
                    )
                if report:
                    log.warning("reconcile: %s", report)
            except Exception:  # the loop must survive a database blip
                log.exception("reconcile failed")
            self.stopped.wait(self.every_s)

    def stop(self) -> None:
        self.stopped.set()


# ------------------------------------------------------------------------------ server admin
def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn  # lazy: `api` only

    if args.migrate:
        cmd_migrate(args)
    uvicorn.run(
        "resonfl_server.backend.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
    )
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from resonfl_server.backend import cli_admin  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command
    from resonfl_server.backend.core.migrate import current_revision  # lazy: per command

    settings = Settings()
    before = current_revision(settings.database_url)
    cli_admin.migrate(settings)
    after = current_revision(settings.database_url)
    where = settings.database_url.split("@")[-1]  # never print the password
    if before == after:
        print(f"migrations: job store {where} already at {after}", flush=True)
    else:
        print(f"migrations: job store {where} upgraded {before or 'empty'} -> {after}", flush=True)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from resonfl_server.backend import backup  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        manifest = backup.backup(settings.database_url, settings.data_dir, args.archive)
    except backup.BackupError as exc:
        print(f"resonfl backup: error: {exc}", file=sys.stderr)
        return 2
    print(f"backup written to {args.archive}: {manifest.describe()}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from resonfl_server.backend import backup  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        manifest = backup.restore(args.archive, settings.database_url, settings.data_dir)
    except backup.BackupError as exc:
        print(f"resonfl restore: error: {exc}", file=sys.stderr)
        return 2
    print(f"restored {args.archive} into {settings.data_dir}: {manifest.describe()}")
    return 0


def cmd_register_site(args: argparse.Namespace) -> int:
    from resonfl_server.backend import cli_admin  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command

    print(cli_admin.register_site(Settings(), args.name))
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    from resonfl_server.backend import cli_admin  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command
    from resonfl_server.backend.services.errors import ServiceError  # lazy: per command

    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    password = args.password or getpass.getpass(f"new password for {args.email}: ")
    try:
        cli_admin.set_password(Settings(**overrides), args.email, password)
    except ServiceError as exc:
        print(f"resonfl: error: {exc.detail}", file=sys.stderr)
        return 2
    print(f"password set for {args.email}")
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from resonfl_server.backend import cli_admin  # lazy: per command
    from resonfl_server.backend.core.config import Settings  # lazy: per command

    print(cli_admin.ensure_admin(Settings(), args.email))
    return 0


# ------------------------------------------------------------------------------ up
def cmd_up(args: argparse.Namespace) -> int:
    from resonfl_server.launcher.local import LocalPlatform  # lazy: per command

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic logs a "setup plugin ..." line per plugin when first imported: noise before
    # the banner. Its warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    data_dir = (args.data_dir or Path("resonfl-data")).resolve()
    try:
        site_args = _site_args(args)
    except ValueError as exc:
        print(f"resonfl up: {exc}", file=sys.stderr)
        return 2
    platform = LocalPlatform(
        site_args=site_args,
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        sites=args.sites,
        redis_url=args.redis_url or os.environ.get("RESONFL_REDIS_URL"),
        database_url=args.database_url or os.environ.get("RESONFL_DATABASE_URL"),
        secret_key=os.environ.get("RESONFL_SECRET_KEY") or _local_secret(data_dir),
        unsafe_no_sandbox=args.unsafe_no_sandbox,
    )
    from resonfl_server.launcher.supervise import Stop, raise_on_signals  # lazy: per command

    raise_on_signals()
    try:
        platform.start(admin_email=args.admin_email)
        print(f"ResonFL is up: {platform.url}  (API docs: {platform.url}/docs)")
        print(f"admin token: {platform.admin_token}")
        if platform.admin_password:
            print(
                f"browser sign-in: {platform.admin_email} / {platform.admin_password}  "
                "(shown once; change it with `resonfl set-password`)"
            )
        print(f"sites: {', '.join(platform.site_names)}; logs in {platform.log_dir}")
        if args.site_approval:
            secrets = platform.data_dir / "secrets"
            print(
                "site operators: RESONFL_SECRETS_DIR="
                f"{secrets}/site-SITE resonfl site jobs --api {platform.url}"
            )
        if args.demo:
            checkpoint = platform.run_demo(num_rounds=args.demo_rounds)
            print(f"demo finished; checkpoint: {checkpoint}")
            if args.exit_after_demo:
                return 0
        print("Ctrl-C stops everything.")
        while True:
            dead = platform.supervisor.dead()
            if dead:
                for child in dead:
                    print(
                        f"{child.name} exited ({child.proc.returncode}):\n"
                        f"{platform.supervisor.tail(child)}",
                        file=sys.stderr,
                    )
                return 1
            time.sleep(1)
    except Stop as sig:
        print(f"\n{sig}: stopping", file=sys.stderr)
        return 0
    finally:
        platform.stop()


def _site_args(args: argparse.Namespace) -> dict[str, list[str]]:
    """`resonfl up`'s per-site flags as each local worker's own `resonfl worker` flags."""
    names = {f"site-{i}" for i in range(1, args.sites + 1)}
    out: dict[str, list[str]] = {}

    def site_of(value: str, sep: str, flag: str) -> tuple[str, str]:
        site, found, rest = value.partition(sep)
        if not found or site not in names:
            raise ValueError(
                f"{flag} {value!r}: start with a local site ({', '.join(sorted(names))}){sep}"
            )
        return site, rest

    for value in args.site_dataset:
        site, rest = site_of(value, ":", "--site-dataset")
        name, eq, folder = rest.partition("=")
        out.setdefault(site, []).extend(
            ["--dataset", f"{name}={Path(folder).resolve()}" if eq else rest]
        )
    for value in args.site_settings:
        site, rest = site_of(value, "=", "--site-settings")
        out.setdefault(site, []).extend(["--settings", str(Path(rest).resolve())])
    for site in args.site_approval:
        if site not in names:
            raise ValueError(f"--site-approval {site!r}: one of {', '.join(sorted(names))}")
        out.setdefault(site, []).append("--require-approval")
    return out


def _local_secret(data_dir: Path) -> str:
    """A per-installation secret kept in the data folder (created on first start)."""
    path = data_dir / "secret_key"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()
