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
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from resonfl.config import TrainingConfig

Raw = dict[str, str]
M = TypeVar("M", bound=BaseModel)
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
    # FederationConfig
    "num_rounds": "Rounds",
    "min_clients": "Minimum sites per round",
    "round_timeout_s": "Round timeout (s)",
    "gpus_per_site": "GPUs per site",
    # the aggregators' Args
    "mu": "Proximal coefficient mu",
    "server_lr": "Server learning rate",
    "buffer_suffixes": "Averaged buffer suffixes",
    "beta1": "Beta 1",
    "beta2": "Beta 2",
    "tau": "Tau (adaptivity)",
    "groups": "Hierarchy groups",
    "group_weighting": "Group weighting",
}


# How a field's text maps to its value: as typed, "a, b" (list), KEY=value lines (mapping),
# or "name: a, b" lines (groups, a dict of lists).
Shape = Literal["scalar", "list", "mapping", "groups"]


@dataclass
class FieldSpec:
    """One input of a generated form (`name` is the form's, `field` the model's)."""

    name: str
    label: str
    kind: Literal["select", "checkbox", "number", "text", "textarea"]
    help: str = ""
    choices: list[str] = field(default_factory=list)
    optional: bool = False
    shape: Shape = "scalar"
    field: str = ""


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _shape(inner: Any) -> Shape:
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        return "list"
    if origin is dict:
        value = (typing.get_args(inner) or (str, Any))[-1]
        return "groups" if typing.get_origin(value) in (list, tuple) else "mapping"
    return "scalar"


def fields_of(
    model: type[BaseModel], labels: dict[str, str] | None = None, prefix: str = ""
) -> list[FieldSpec]:
    """Form inputs for every field of a pydantic model, in declaration order; each input is
    named `prefix + field` (one form can hold several models' fields)."""
    specs = []
    for name, info in model.model_fields.items():
        inner, optional = _unwrap(info.annotation)
        origin = typing.get_origin(inner)
        shape = _shape(inner)
        help_text = info.description or ""
        if optional and "blank" not in help_text:
            help_text = (help_text + "; " if help_text else "") + "leave blank for off"
        if shape == "list":
            help_text = (help_text + "; " if help_text else "") + "comma-separated"
        elif shape == "groups":
            help_text = (help_text + "; " if help_text else "") + "one per line: 'name: a, b'"
        label = (labels or LABELS).get(name, name.replace("_", " ").capitalize())
        kind: Any
        if origin is Literal:
            kind = "select"
        elif inner is bool:
            kind = "checkbox"
        elif inner in (int, float):
            kind = "number"
        elif origin is dict:
            kind = "textarea"
            help_text = help_text or "one KEY=value per line"
        else:
            kind = "text"
        choices = [str(c) for c in typing.get_args(inner)] if kind == "select" else []
        opt = optional and kind in ("number", "text")
        specs.append(FieldSpec(prefix + name, label, kind, help_text, choices, opt, shape, name))
    return specs


def default_raw(model: type[BaseModel], prefix: str = "") -> Raw:
    """The text of each field's declared default ("" for a required field)."""
    raw: Raw = {}
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        raw[prefix + name] = "" if default is PydanticUndefined else to_text(default)
    return raw


def to_text(value: Any) -> str:
    """A config value as the text its input shows."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(to_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(
            f"{k}: {to_text(v)}" if isinstance(v, tuple | list) else f"{k}={to_text(v)}"
            for k, v in value.items()
        )
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


def parse_groups(text: str) -> dict[str, list[str]]:
    """`name: a, b` per line into {name: [a, b]}; ValueError naming the bad line."""
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        name, sep, rest = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"line {number} ({line!r}) is not 'name: a, b'")
        groups[name.strip()] = [s.strip() for s in rest.split(",") if s.strip()]
    return groups


def validation_errors(exc: ValidationError, default_field: str, prefix: str = "") -> Errors:
    """Pydantic errors keyed by top-level field (with the form's prefix); model-level ones go
    to `default_field`."""
    errors: Errors = {}
    for err in exc.errors():
        loc = err["loc"]
        name = prefix + str(loc[0]) if loc else default_field
        message = str(err["msg"]).removeprefix("Value error, ")
        if len(loc) > 1:
            message = f"{'.'.join(str(p) for p in loc[1:])}: {message}"
        errors.setdefault(name, message)
    return errors


def parse_model(
    model: type[M], raw: Raw, prefix: str = "", default_field: str | None = None
) -> tuple[M | None, Errors]:
    """Validate a generated form's text with the model itself; errors keyed by input name."""
    data: dict[str, Any] = {}
    errors: Errors = {}
    specs = fields_of(model, prefix=prefix)
    for spec in specs:
        text = raw.get(spec.name, "")
        try:
            if spec.kind == "checkbox":
                data[spec.field] = text == "true"
            elif spec.shape == "list":
                data[spec.field] = [
                    p.strip() for p in text.replace(";", ",").split(",") if p.strip()
                ]
            elif spec.shape == "mapping":
                data[spec.field] = parse_key_values(text, spec.field)
            elif spec.shape == "groups":
                data[spec.field] = parse_groups(text)
            elif text == "" and spec.optional:
                data[spec.field] = None
            elif text == "":
                errors[spec.name] = "a value is required"
            else:
                data[spec.field] = text
        except ValueError as exc:
            errors[spec.name] = str(exc)
    fallback = default_field or (specs[0].name if specs else prefix.rstrip("_") or "_")
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        return None, {**validation_errors(exc, fallback, prefix), **errors}
    return (None, errors) if errors else (config, {})


def parse_training(raw: Raw) -> tuple[TrainingConfig | None, Errors]:
    """Validate the Training step's text with TrainingConfig itself."""
    return parse_model(TrainingConfig, raw, default_field="local_steps")
