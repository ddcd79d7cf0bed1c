"""Every aggregator the FL core ships, found by walking `resonfl.fl`'s modules.

A new algorithm is one module here with an `Aggregator` subclass and its typed `Args`; the
wizard, its validation and its defaults read them from this list, so nothing else is edited.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from resonfl.config import DEFAULT_AGGREGATOR
from resonfl.fl.base import Aggregator


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def aggregator_classes() -> list[type[Aggregator]]:
    """Concrete aggregators defined in `resonfl.fl.*`, the default first, then by name."""
    package = importlib.import_module("resonfl.fl")
    found: dict[str, type[Aggregator]] = {}
    for info in pkgutil.iter_modules(package.__path__, "resonfl.fl."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Aggregator)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
            ):
                found[class_path(cls)] = cls
    return sorted(found.values(), key=lambda c: (class_path(c) != DEFAULT_AGGREGATOR, c.__name__))


__all__ = ["aggregator_classes", "class_path"]
