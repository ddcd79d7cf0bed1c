"""Field types shared by request bodies: text and JSON that every database can store and
every response can serialize again (no NUL, no unpaired surrogates, no NaN/Infinity)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field


def clean_text(value: str) -> str:
    """Refuse what PostgreSQL cannot store (NUL) and what cannot be encoded as UTF-8 (an
    unpaired surrogate such as "\\ud800", which JSON escapes allow)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from None
    return value


class UnsafeJSON(ValueError):
    """A decoded JSON value holds something no database or response can carry; `where` is
    the dotted path to it ("" for the top level)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where, self.reason = where, reason


def clean_json(value: Any, where: str = "") -> Any:
    """Walk a decoded JSON value: every string (keys too) clean, every float finite."""
    if isinstance(value, str):
        _clean_at(where, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeJSON(where, f"must be a finite number, not {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _clean_at(path, str(key))
            clean_json(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            clean_json(item, f"{where}[{index}]")
    return value


def _clean_at(where: str, value: str) -> None:
    try:
        clean_text(value)
    except ValueError as exc:
        raise UnsafeJSON(where.encode("utf-8", "backslashreplace").decode(), str(exc)) from None


CleanStr = Annotated[str, AfterValidator(clean_text)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
