"""The wizard's view of the FL core's aggregators: one entry per algorithm, its form built from
its `Args`.

Every concrete aggregator in `resonfl.fl` is offered (found by `resonfl.fl.registry`), unless
`NOT_IN_WIZARD` names it with the reason. The inputs, their help (each field's description),
their defaults and their validation all come from the algorithm's own pydantic `Args`, as the
Training step comes from `TrainingConfig`; an `Args.check_sites(sites)` method, when present,
checks the args against the chosen sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from resonfl_server.backend.web.forms import (
    Errors,
    FieldSpec,
    Raw,
    default_raw,
    fields_of,
    parse_model,
)
from resonfl.fl.base import Aggregator
from resonfl.fl.registry import aggregator_classes, class_path

NOT_IN_WIZARD = {
    "CyclicAggregator": "the Cyclic workflow picks it (the one update becomes the global); "
    "it is not an aggregator to choose on its own",
}


@dataclass(frozen=True)
class Algorithm:
    """One aggregator as the Federation step offers it."""

    key: str  # the form's value and the prefix of its inputs: the class name, lower case
    path: str  # aggregator_path in config_fed_server.json
    title: str
    args: type[BaseModel]

    @property
    def prefix(self) -> str:
        return f"{self.key}__"

    def fields(self) -> list[FieldSpec]:
        return fields_of(self.args, labels={}, prefix=self.prefix)

    def defaults(self) -> Raw:
        return default_raw(self.args, self.prefix)

    def parse(self, raw: Raw, sites: list[str]) -> tuple[dict[str, Any] | None, Errors]:
        """The args as config_fed_server.json holds them, or errors keyed by input name."""
        args, errors = parse_model(self.args, raw, self.prefix)
        if args is None:
            return None, errors
        check_sites = getattr(args, "check_sites", None)
        if check_sites is not None:
            try:
                check_sites(sites)
            except ValueError as exc:
                return None, {self.fields()[0].name: str(exc)}
        return args.model_dump(mode="json"), {}


def _title(cls: type[Aggregator]) -> str:
    first = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    return f"{cls.__name__}: {first.replace('``', '')}" if first else cls.__name__


@cache
def algorithms() -> dict[str, Algorithm]:
    """Key -> algorithm, the FL core's default aggregator first."""
    return {
        cls.__name__.lower(): Algorithm(
            cls.__name__.lower(), class_path(cls), _title(cls), cls.Args
        )
        for cls in aggregator_classes()
        if cls.__name__ not in NOT_IN_WIZARD
    }


def by_path(path: str) -> Algorithm | None:
    return next((a for a in algorithms().values() if a.path == path), None)


def defaults() -> Raw:
    """Every algorithm's inputs at their declared defaults (switching keeps what was typed)."""
    raw: Raw = {}
    for algorithm in algorithms().values():
        raw.update(algorithm.defaults())
    return raw


def form_keys() -> list[str]:
    return [f.name for a in algorithms().values() for f in a.fields()]
