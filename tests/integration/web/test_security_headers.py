"""Every HTML page sends a CSP without inline script, refuses framing, and says nosniff and
a Referrer-Policy; templates carry no inline script or event handler for the CSP to break."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

TEMPLATES = Path(__file__).resolve().parents[3] / "frontend" / "templates"


def _page_paths(app: Any) -> list[str]:
    """GET routes without path parameters that answer with HTML (the browser's pages)."""
    paths = []
    for route in app.routes:
        if isinstance(route, Route) and not isinstance(route, APIRoute):
            if "GET" in (route.methods or set()) and "{" not in route.path:
                paths.append(route.path)
    return sorted(set(paths))


def test_every_html_page_sends_the_security_headers(
    app: Any, client: TestClient, signed_in: str
) -> None:
    pages = _page_paths(app)
    checked = 0
    for path in pages:
        response = client.get(path)
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        checked += 1
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, path
        if not path.startswith(("/docs", "/redoc")):
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path
    assert checked >= 3, f"too few HTML pages found among {pages}"


def test_api_responses_say_nosniff(client: TestClient) -> None:
    response = client.get("/api/v1/health")

    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers  # JSON, not a page


def test_templates_have_no_inline_script_or_handler() -> None:
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler = re.compile(r"\son[a-z]+\s*=", re.I)
    style_attr = re.compile(r"\sstyle\s*=", re.I)
    found = []
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text("utf-8")
        for pattern in (inline_script, handler, style_attr):
            found += [f"{template.name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not found, found
