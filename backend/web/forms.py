"""Forms built from the SDK's pydantic models: one input per field, labelled, with the
field's description as help; posted strings parsed back and validated by the same models,
errors keyed by field so each shows beside its input.

Posted values are kept as the text the user typed (`raw`), so a page re-rendered with errors,
or revisited later, shows exactly what was entered.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from resonfl.config import TrainingConfig

Raw = dict[str, str]
Errors = dict[str, str]

LABELS = {
    "lr": "Learning rate",
    "weight_decay": "Weight decay",
    "momentum": "Momentum",
    "betas": "Adam betas",
    "batch_size": "Batch size",
    "eval_batch_size": "Eval batch size",
    "local_steps": "Local steps per round",
    "local_epochs": "Local epochs per round",
    "lr_schedule": "LR schedule",
    "warmup_steps": "Warmup steps",
    "min_lr_ratio": "Minimum LR ratio",
    "continuous_schedule": "Continuous LR schedule across rounds",
    "persist_optimizer_state": "Persist optimizer state across rounds",
    "amp": "Mixed precision (AMP)",
    "grad_clip": "Gradient clipping (max norm)",
    "ema_decay": "EMA decay",
    "ema_persist": "Keep the EMA decay schedule across rounds",
    "label_smoothing": "Label smoothing",
    "tta_hflip": "Test-time augmentation (h-flip)",
    "extra": "Extra environment variables",
}


@dataclass
class FieldSpec:
    """One input of a generated form."""

    name: str
    label: str
    kind: Literal["select", "checkbox", "number", "text", "textarea"]
    help: str = ""
    choices: list[str] = field(default_factory=list)
    optional: bool = False


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def fields_of(model: type[BaseModel], labels: dict[str, str] | None = None) -> list[FieldSpec]:
    """Form inputs for every field of a pydantic model, in declaration order."""
    specs = []
    for name, info in model.model_fields.items():
        inner, optional = _unwrap(info.annotation)
        origin = typing.get_origin(inner)
        help_text = info.description or ""
        if optional:
            help_text = (help_text + "; " if help_text else "") + "leave blank for off"
        label = (labels or LABELS).get(name, name.replace("_", " ").capitalize())
        if origin is Literal:
            spec = FieldSpec(
                name, label, "select", help_text, [str(c) for c in typing.get_args(inner)]
            )
        elif inner is bool:
            spec = FieldSpec(name, label, "checkbox", help_text)
        elif inner in (int, float):
            spec = FieldSpec(name, label, "number", help_text, optional=optional)
        elif origin is dict:
            spec = FieldSpec(name, label, "textarea", help_text or "one KEY=value per line")
        else:
            spec = FieldSpec(name, label, "text", help_text, optional=optional)
        specs.append(spec)
    return specs


def to_text(value: Any) -> str:
    """A config value as the text its input shows."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(to_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}={to_text(v)}" for k, v in value.items())
    return str(value)


def model_to_raw(model: BaseModel) -> Raw:
    return {name: to_text(getattr(model, name)) for name in type(model).model_fields}


def form_to_raw(form: Any, specs: list[FieldSpec]) -> Raw:
    """Posted form values as text; an unchecked checkbox is 'false'."""
    raw: Raw = {}
    for spec in specs:
        value = form.get(spec.name)
        if spec.kind == "checkbox":
            raw[spec.name] = "true" if value in ("on", "true", "1") else "false"
        else:
            raw[spec.name] = value.strip() if isinstance(value, str) else ""
    return raw


def _scalar(text: str) -> str | int | float | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)  # type: ignore[no-any-return]
        except ValueError:
            pass
    return text


def parse_key_values(text: str, what: str) -> dict[str, Any]:
    """`KEY=value` lines (or a JSON object) into a dict; ValueError naming the bad line."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{what}: must be a JSON object")
        return data
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"line {number} ({line!r}) is not KEY=value")
        out[key.strip()] = _scalar(value.strip())
    return out


def validation_errors(exc: ValidationError, default_field: str) -> Errors:
    """Pydantic errors keyed by top-level field; model-level ones go to `default_field`."""
    errors: Errors = {}
    for err in exc.errors():
        loc = err["loc"]
        name = str(loc[0]) if loc else default_field
        message = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) > 1:
            message = f"{'.'.join(str(p) for p in loc[1:])}: {message}"
        errors.setdefault(name, message)
    return errors


def parse_training(raw: Raw) -> tuple[TrainingConfig | None, Errors]:
    """Validate the Training step's text with TrainingConfig itself."""
    data: dict[str, Any] = {}
    errors: Errors = {}
    for spec in fields_of(TrainingConfig):
        text = raw.get(spec.name, "")
        if spec.kind == "checkbox":
            data[spec.name] = text == "true"
        elif spec.name == "betas":
            parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
            data[spec.name] = parts
        elif spec.name == "extra":
            try:
                data[spec.name] = parse_key_values(text, "extra")
            except ValueError as exc:
                errors[spec.name] = str(exc)
        elif text == "" and spec.optional:
            data[spec.name] = None
        elif text == "":
            errors[spec.name] = "a value is required"
        else:
            data[spec.name] = text
    try:
        config = TrainingConfig.model_validate(data)
    except ValidationError as exc:
        return None, {**validation_errors(exc, "local_steps"), **errors}
    return (None, errors) if errors else (config, {})
