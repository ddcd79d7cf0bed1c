"""Packages and where they live; everything else is in pyproject.toml.

The server folders (backend/, workers/, launcher/) stay at the top of the repository but
install under one distribution-qualified name, `resonfl_server.<folder>`, so that installing
ResonFL does not claim generic top-level names such as `backend` or `workers`. setuptools'
`package_dir` maps each of their packages; pyproject.toml cannot list a computed mapping.
"""

from setuptools import find_packages, setup

SERVER_FOLDERS = ("backend", "workers", "launcher")
server = {
    f"resonfl_server.{name}": name.replace(".", "/")
    for name in find_packages(include=[p for f in SERVER_FOLDERS for p in (f, f + ".*")])
}
# The Alembic scripts and the web templates travel with the server, so an installed
# (non-editable) ResonFL, such as the Docker image's, finds them where the code looks:
# site-packages/resonfl_server/{migrations,frontend}.
server["resonfl_server.migrations"] = "migrations"
server["resonfl_server.migrations.versions"] = "migrations/versions"
server["resonfl_server.frontend"] = "frontend"
setup(
    packages=[*find_packages(include=["resonfl", "resonfl.*"]), *server],
    package_dir=server,
)
