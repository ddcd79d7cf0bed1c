"""The FastAPI application factory. No import-time globals: run it with
`uvicorn --factory resonfl_server.backend.app:create_app` (settings from RESONFL_* variables)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resonfl_server.backend.api import metrics
from resonfl_server.backend.api.metrics import make_registry
from resonfl_server.backend.api.routes import experiments, jobs, site_api, sites, users
from resonfl_server.backend.core.config import Settings, get_settings
from resonfl_server.backend.core.db import create_db_engine, make_session_factory
from resonfl_server.backend.services.dispatch import Dispatcher, load_dispatcher
from resonfl_server.backend.services.errors import (
    Conflict,
    Forbidden,
    InvalidSubmission,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.backend.web.headers import SecurityHeaders
from resonfl import __version__

API_PREFIX = "/api/v1"

_STATUS = {NotFound: 404, Forbidden: 403, Conflict: 409, PayloadTooLarge: 413}


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    """Build the app. Without a dispatcher, the Celery one from workers/ is used."""
    settings = settings or get_settings()
    engine = create_db_engine(settings.database_url)
    app = FastAPI(
        title="ResonFL",
        version=__version__,
        description="Self-hosted federated learning: submit a job, follow its rounds, "
        "download the global model.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = ArtifactStore(settings.data_dir)
    app.state.dispatcher = dispatcher or load_dispatcher(settings)
    for module in (jobs, sites, users, site_api, experiments):
        app.include_router(module.router, prefix=API_PREFIX)
    app.state.metrics_registry = make_registry(app.state.session_factory, settings)
    app.include_router(metrics.router)  # /metrics, where Prometheus looks by default
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    from resonfl_server.backend.web import (
        mount_web,
    )  # browser pages (issue 4): HTML routes + /static

    mount_web(app)
    app.add_middleware(MaxBodySize, max_bytes=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def read_health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, InvalidSubmission):
        return JSONResponse({"detail": _json_safe(exc.as_dict())}, status_code=422)
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
    return JSONResponse({"detail": _json_safe(exc.detail)}, status_code=status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with the echoed `input` made printable: a request may hold NaN or an
    unpaired surrogate ("\\ud800"), which the default handler fails to serialize (a 500)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class _BodyTooLarge(Exception):
    pass


class MaxBodySize:
    """Refuse request bodies over `max_bytes` while they stream in (413), before the
    multipart parser has spooled them to disk; a zip's unpacked size is checked separately."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body: dict[str, Any] = {
            "detail": f"request body larger than max_upload_bytes ({self.max_bytes} bytes)"
        }
        response = JSONResponse(body, status_code=413)
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}
