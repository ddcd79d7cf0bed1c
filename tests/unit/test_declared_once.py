"""Settings declared once: the guards that fail when a second copy drifts from the first.

- the executor template's fallbacks equal TrainingConfig's defaults;
- every aggregator of the FL core is offered by the wizard, or excluded by name with a reason;
- each algorithm's wizard form is its Args: the form's defaults parse back to Args();
- the client-side knob an algorithm needs (FedProx's mu) travels in config_fed_client.json.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from resonfl_server.backend.web import algorithms
from resonfl_server.backend.web.drafts import federation_config
from resonfl.catalog import make_job
from resonfl.config import FederationConfig, TrainingConfig
from resonfl.fl.registry import aggregator_classes
from resonfl.job import CLIENT_CONFIG, Job, JobValidationError

EXECUTOR = Path(__file__).resolve().parents[2] / "resonfl/templates/custom_client_executor.py"
# Fallbacks in the executor that are not TrainingConfig defaults, each with why.
EXECUTOR_ONLY = {
    "local_epochs": "reached only when local_steps is also unset, which TrainingConfig refuses",
}


def _executor_fallbacks() -> dict[str, list[object]]:
    """`self.arg("name", default)` calls in the executor template: name -> defaults used."""
    found: dict[str, list[object]] = {}
    for node in ast.walk(ast.parse(EXECUTOR.read_text("utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "arg"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            found.setdefault(node.args[0].value, []).append(ast.literal_eval(node.args[1]))
    return found


def test_executor_template_defaults_equal_training_config() -> None:
    defaults = TrainingConfig().model_dump()
    fallbacks = _executor_fallbacks()
    assert len(fallbacks) >= 10, "the walk found too few arg() calls to mean anything"
    drift = {
        name: (values, defaults.get(name, "<not a TrainingConfig field>"))
        for name, values in fallbacks.items()
        if name not in EXECUTOR_ONLY
        and any(v != defaults.get(name, PydanticUndefined) for v in values)
    }
    assert not drift, f"executor fallback != TrainingConfig default: {drift}"
    assert set(EXECUTOR_ONLY) <= set(fallbacks), "an exclusion names no fallback; drop it"


def test_every_fl_aggregator_is_in_the_wizard_or_excluded_with_a_reason() -> None:
    offered = {a.path for a in algorithms.algorithms().values()}
    names = {cls.__name__ for cls in aggregator_classes()}
    missing = [
        cls.__name__
        for cls in aggregator_classes()
        if f"{cls.__module__}.{cls.__qualname__}" not in offered
        and cls.__name__ not in algorithms.NOT_IN_WIZARD
    ]
    assert not missing, f"add to the wizard or to NOT_IN_WIZARD with the reason: {missing}"
    assert set(algorithms.NOT_IN_WIZARD) <= names, "an exclusion names no FL aggregator"
    assert all(reason.strip() for reason in algorithms.NOT_IN_WIZARD.values())
    assert {"FedAvg", "FedProx", "FedAdam", "HierarchicalFedAvg"} <= {
        a.path.rsplit(".", 1)[1] for a in algorithms.algorithms().values()
    }


@pytest.mark.parametrize("key", sorted(algorithms.algorithms()))
def test_an_algorithm_form_at_its_defaults_gives_its_args_defaults(key: str) -> None:
    algorithm = algorithms.algorithms()[key]
    required = {name for name, info in algorithm.args.model_fields.items() if info.is_required()}
    if required:
        pytest.skip(f"{key} has required args ({sorted(required)}): no all-default form")
    sites = [f"site-{i}" for i in range(1, 9)]  # enough for robust rules at their default f
    args, errors = algorithm.parse(algorithm.defaults(), sites)
    assert errors == {}
    assert args == algorithm.args().model_dump(mode="json")


def test_every_wizard_algorithm_setting_is_described() -> None:
    """The description is the input's help and the setting's reference: never empty."""
    bare = [
        f"{a.args.__name__}.{name}"
        for a in algorithms.algorithms().values()
        for name, info in a.args.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert not bare, f"give these Args fields a description: {bare}"


def test_an_algorithm_form_refuses_a_bad_value_beside_its_input() -> None:
    fedprox = algorithms.algorithms()["fedprox"]
    args, errors = fedprox.parse({"fedprox__mu": "-1"}, ["site-1"])
    assert args is None
    assert "greater than or equal to 0" in errors["fedprox__mu"]


def test_hierarchical_groups_must_cover_the_chosen_sites() -> None:
    raw = {
        "num_rounds": "2",
        "sites": "site-1,site-2",
        "workflow": "scatter_and_gather",
        "aggregator": "hierarchicalfedavg",
        "hierarchicalfedavg__groups": "east: site-1",
        "hierarchicalfedavg__group_weighting": "equal",
    }
    fed, errors = federation_config(raw, ["site-1", "site-2"])
    assert fed is None
    assert "site-2" in errors["hierarchicalfedavg__groups"]
    raw["hierarchicalfedavg__groups"] = "east: site-1\nwest: site-2"
    fed, errors = federation_config(raw, ["site-1", "site-2"])
    assert errors == {} and fed is not None
    assert fed.aggregator_args == {
        "groups": {"east": ["site-1"], "west": ["site-2"]},
        "group_weighting": "equal",
    }


def test_the_federation_inputs_default_to_federation_config() -> None:
    fed, errors = federation_config(
        {"sites": "site-1", "workflow": "scatter_and_gather", "aggregator": "fedavg"}, ["site-1"]
    )
    assert errors == {} and fed is not None
    assert fed == FederationConfig(sites=["site-1"])
    assert fed.effective_min_clients == 1


def test_fedprox_mu_travels_in_the_client_config(tmp_path: Path) -> None:
    job = make_job("digits", 2)
    job.federation.aggregator_path = "resonfl.fl.fedprox.FedProx"
    job.federation.aggregator_args = {"mu": 0.25}
    folder = job.render(tmp_path / "job")
    client = json.loads((folder / CLIENT_CONFIG).read_text("utf-8"))
    assert client["executors"][0]["executor"]["task_args"] == {"fedprox_mu": 0.25}
    assert Job.load(folder).client_task_args() == {"fedprox_mu": 0.25}

    client["executors"][0]["executor"]["task_args"] = {"fedprox_mu": 9.0}
    (folder / CLIENT_CONFIG).write_text(json.dumps(client), encoding="utf-8")
    with pytest.raises(JobValidationError, match="task_args"):
        Job.load(folder)
