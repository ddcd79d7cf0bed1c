"""Write the generated parts of docs/own-model.md from the code, so the guide cannot drift.

Between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->`` the guide holds
tables built here from the pydantic models (`Job`, `ModelConfig`, `TrainingConfig`,
`FederationConfig`) and from every aggregator and workflow class in `resonfl.fl` with its
typed ``Args``. tests/unit/test_docs_own_model.py fails when the file differs from what this
script writes.

    python scripts/gen_own_model_doc.py          # rewrite docs/own-model.md in place
    python scripts/gen_own_model_doc.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.fl.base import Workflow
from resonfl.fl.registry import aggregator_classes, class_path
from resonfl.job import Job

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "own-model.md"

# When to pick each component: a new class in resonfl.fl without an entry fails the doc test.
WHEN: dict[str, str] = {
    "resonfl.fl.fedavg.FedAvg": "The default. Start here; every other choice is measured against it.",
    "resonfl.fl.fedprox.FedProx": (
        "Sites whose data differ a lot (non-IID) and drift apart in local training. Your train "
        "function must add `env.proximal_term(model)` to its loss (`env.fit` does)."
    ),
    "resonfl.fl.fedopt.FedAdam": (
        "FedAvg plateaus and a server-side optimizer may help; no BatchNorm-like buffers "
        "needed, buffers are averaged anyway. Paper version: no bias correction."
    ),
    "resonfl.fl.fedopt.FedYogi": "As FedAdam, when its steps grow too large (v grows gently).",
    "resonfl.fl.fedopt.FedAdagrad": "As FedAdam, with step sizes that only shrink over the run.",
    "resonfl.fl.fedopt.FedAvgM": "Server momentum; server_lr=1, momentum=0 is exactly FedAvg.",
    "resonfl.fl.hierarchical.HierarchicalFedAvg": (
        "Sites grouped (hospitals under regions): mean per group, then across groups; "
        "`group_weighting: equal` gives small groups equal say."
    ),
    "resonfl.fl.cyclic.CyclicAggregator": (
        "Only with the Cyclic workflow: the round's one update becomes the global model."
    ),
    "resonfl.fl.median.CoordinateMedian": (
        "Some sites may send wrong or hostile updates (f < n/2). Holds every update in memory; "
        "costs accuracy on non-IID data (docs/privacy.md)."
    ),
    "resonfl.fl.median.TrimmedMean": (
        "As the median, averaging more honest values: drops the f lowest and highest per weight."
    ),
    "resonfl.fl.krum.Krum": (
        "Up to f bad sites with n >= 2f + 3, on IID-like data: one site's update becomes the model."
    ),
    "resonfl.fl.krum.MultiKrum": "As Krum, averaging the n - f best updates: better on non-IID data.",
    "resonfl.fl.clipping.NormClip": (
        "Bound how far any one site can pull the model (backdoors, scaled updates); streams."
    ),
    "resonfl.fl.dp_fedavg.DPFedAvg": (
        "Site-level differential privacy for the released models, with many sites (hundreds+); "
        "the server still sees each update."
    ),
    "resonfl.fl.dp_sgd.DPSGDFedAvg": (
        "Sample-level differential privacy on each site (opacus): a target epsilon per site, no "
        "BatchNorm. Costs accuracy, most on small sites."
    ),
    "resonfl.fl.secagg.SecAggFedAvg": (
        "The server sees only the sum of the updates (SecAgg+): sites mask them before the "
        "upload, a site that drops mid-round is recovered. At least 3 sites; 8 bytes a weight."
    ),
    "resonfl.fl.workflows.ScatterAndGather": (
        "The default: every site trains every round, or `sites_per_round` drawn at random "
        "(DP-FedAvg then earns amplification by sampling)."
    ),
    "resonfl.fl.workflows.Cyclic": (
        "One site per round, in turn (the model travels). Needs "
        "`aggregator_path: resonfl.fl.cyclic.CyclicAggregator` too."
    ),
}
WORKFLOW_PATHS = ("resonfl.fl.workflows.ScatterAndGather", "resonfl.fl.workflows.Cyclic")


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if inspect.isclass(annotation) else None
    text = text or str(annotation)
    text = re.sub(r"\b(typing|pathlib|resonfl\.config)\.", "", text)
    return text.replace("NoneType", "None")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return f"a default `{type(value).__name__}()`"
        return f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default, default=str)}`"


_BOUNDS = {
    "gt": ">",
    "ge": "≥",
    "lt": "<",
    "le": "≤",
    "min_length": "min length",
    "max_length": "max length",
}


def _constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, word in _BOUNDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{word} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fields_table(model: type[BaseModel]) -> str:
    rows = [
        "| field | type | default | constraints | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in model.model_fields.items():
        rows.append(
            f"| `{name}` | `{_cell(_type(field.annotation))}` | {_cell(_default(field))} "
            f"| {_cell(_constraints(field))} | {_cell(field.description or '')} |"
        )
    return "\n".join(rows)


def _args(cls: type) -> str:
    args_model: type[BaseModel] = cls.Args
    parts = []
    for name, field in args_model.model_fields.items():
        if (
            cls is not None
            and issubclass(cls, Workflow)
            and name in ("num_rounds", "min_clients", "round_timeout_s")
        ):
            continue  # set by FederationConfig, not in workflow_args
        bounds = _constraints(field)
        desc = f": {field.description}" if field.description else ""
        parts.append(
            f"`{name}` = {_default(field).strip('`')}" + (f" ({bounds})" if bounds else "") + desc
        )
    return "<br>".join(_cell(p) for p in parts) or "none"


def _first_line(cls: type) -> str:
    return (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""


def workflow_classes() -> list[type[Workflow]]:
    out = []
    for path in WORKFLOW_PATHS:
        module, _, name = path.rpartition(".")
        out.append(getattr(importlib.import_module(module), name))
    package = importlib.import_module("resonfl.fl")
    for info in pkgutil.iter_modules(package.__path__, "resonfl.fl."):
        for _, cls in inspect.getmembers(importlib.import_module(info.name), inspect.isclass):
            if issubclass(cls, Workflow) and not inspect.isabstract(cls) and cls not in out:
                out.append(cls)
    return out


def _workflow_path(cls: type) -> str:
    for path in WORKFLOW_PATHS:
        if path.endswith("." + cls.__name__):
            return path
    return class_path(cls)


def components_table() -> str:
    rows = ["| kind | class path | what it does | args (`aggregator_args` / `workflow_args`) | when to use it |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for cls in aggregator_classes():
        path = class_path(cls)
        rows.append(
            f"| aggregator | `{path}` | {_cell(_first_line(cls))} | {_args(cls)} | {_cell(WHEN.get(path, ''))} |"
        )
    for wf in workflow_classes():
        path = _workflow_path(wf)
        rows.append(
            f"| workflow | `{path}` | {_cell(_first_line(wf))} | {_args(wf)} | {_cell(WHEN.get(path, ''))} |"
        )
    return "\n".join(rows)


def missing_when() -> list[str]:
    """Components without a 'when to use it' entry (the doc test fails on any)."""
    paths = [class_path(c) for c in aggregator_classes()] + [
        _workflow_path(w) for w in workflow_classes()
    ]
    return [p for p in paths if p not in WHEN]


def sections() -> dict[str, str]:
    return {
        "job-fields": fields_table(Job),
        "model-fields": fields_table(ModelConfig),
        "training-fields": fields_table(TrainingConfig),
        "federation-fields": fields_table(FederationConfig),
        "components": components_table(),
    }


def render(text: str) -> str:
    """`text` with every generated section replaced by what the code says now."""
    for name, body in sections().items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n)(?:.*?\n)?(<!-- END GENERATED: {name} -->)",
            re.S,
        )
        if not pattern.search(text):
            raise SystemExit(f"{GUIDE}: no generated section {name!r}")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the guide is stale")
    ns = parser.parse_args(argv)
    current = GUIDE.read_text(encoding="utf-8")
    fresh = render(current)
    if ns.check:
        if fresh != current:
            print(f"{GUIDE} is stale: run python scripts/gen_own_model_doc.py", file=sys.stderr)
            return 1
        return 0
    GUIDE.write_text(fresh, encoding="utf-8")
    print(f"wrote {GUIDE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
