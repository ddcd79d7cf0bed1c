"""docs/deploy.md and the code agree on the `RESONFL_*` settings: each one documented is read
somewhere, each one read is documented, and each Settings field is used outside its class."""

from __future__ import annotations

import re
from pathlib import Path

from resonfl_server.backend.core.config import Settings
from resonfl_server.workers.settings import (
    RequirementsSettings,
    SandboxSettings,
    SiteWorkerSettings,
)

ROOT = Path(__file__).resolve().parents[2]
CODE = ("resonfl", "backend", "workers", "launcher", "migrations")
NAME = re.compile(r"\bRESONFL_[A-Z0-9_]*[A-Z0-9]\b")


def _code_files() -> list[Path]:
    return [p for folder in CODE for p in (ROOT / folder).rglob("*.py")]


def _documented() -> set[str]:
    return set(NAME.findall((ROOT / "docs/deploy.md").read_text("utf-8")))


def _read() -> set[str]:
    """Settings fields (pydantic-settings reads RESONFL_<FIELD>) and names the code spells out."""
    fields = {f"RESONFL_{n.upper()}" for n in Settings.model_fields}
    fields |= {f"RESONFL_{n.upper()}" for n in SiteWorkerSettings.model_fields}
    fields |= {f"RESONFL_SANDBOX_{n.upper()}" for n in SandboxSettings.model_fields}
    fields |= {f"RESONFL_REQUIREMENTS_{n.upper()}" for n in RequirementsSettings.model_fields}
    spelled = {n for p in _code_files() for n in NAME.findall(p.read_text("utf-8"))}
    return fields | spelled


def test_every_documented_setting_is_read() -> None:
    assert len(_documented()) >= 10
    unread = sorted(_documented() - _read())
    assert not unread, f"docs/deploy.md documents settings nothing reads: {unread}"


def test_every_setting_read_is_documented() -> None:
    undocumented = sorted(_read() - _documented())
    assert not undocumented, f"add to docs/deploy.md: {undocumented}"


def test_every_settings_field_is_used() -> None:
    sources = {p: p.read_text("utf-8") for p in _code_files()}
    unused = []
    for model, home in (
        (Settings, "backend/core/config.py"),
        (SiteWorkerSettings, "workers/settings.py"),
    ):
        for name in model.model_fields:
            pattern = re.compile(rf"\.{name}\b")
            if not any(pattern.search(text) for p, text in sources.items() if not p.match(home)):
                unused.append(f"{model.__name__}.{name}")
    assert not unused, f"declared, never read: {unused}"
