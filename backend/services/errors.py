"""Typed errors raised by services; resonfl_server.backend.app maps each to one HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; `detail` is what the client sees."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    """404 — also used for another user's job, so ids of others' jobs do not leak."""


class Forbidden(ServiceError):
    """403."""


class Conflict(ServiceError):
    """409 — the request clashes with the current state (e.g. a finished round)."""


class PayloadTooLarge(ServiceError):
    """413."""


class InvalidSubmission(ServiceError):
    """422 naming the file and the field at fault."""

    def __init__(self, file: str, field: str, message: str) -> None:
        super().__init__(f"{file}: {field}: {message}" if field else f"{file}: {message}")
        self.file, self.field, self.message = file, field, message

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "field": self.field, "message": self.message}
