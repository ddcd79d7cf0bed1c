"""FL algorithms as pure code: aggregators, workflows, and their shared interfaces.

Shared by the local simulator and the server's aggregation task; no web/db/Celery imports.
Components are picked by dotted class path (``resolve_class``) and configured by one typed
``Args`` object each.

The pure ``fedavg()`` function is imported from ``resonfl.fl.fedavg``; it is not re-exported
here, because that would shadow the submodule of the same name.
"""

from resonfl.fl.base import (
    Aggregator,
    AggregatorState,
    ComponentError,
    DuplicateUpdateError,
    FLError,
    InvalidUpdateError,
    ModelNotBoundError,
    NoArgs,
    NonFiniteUpdateError,
    NoUpdatesError,
    RoundClosedError,
    RoundNotStartedError,
    StateDict,
    StateMismatchError,
    UnknownSiteError,
    WeightsMismatchError,
    Workflow,
    WorkflowArgs,
    dump_state,
    load_state,
    parameter_names,
    resolve_class,
    weighted_metrics,
)
from resonfl.fl.cyclic import Cyclic, CyclicAggregator
from resonfl.fl.fedavg import FedAvg, WeightedSum
from resonfl.fl.fedopt import (
    FedAdagrad,
    FedAdagradArgs,
    FedAdam,
    FedAdamArgs,
    FedAvgM,
    FedAvgMArgs,
    FedOpt,
    FedOptArgs,
    FedYogi,
    FedYogiArgs,
)
from resonfl.fl.fedprox import FedProx, FedProxArgs, proximal_term
from resonfl.fl.hierarchical import HierarchicalArgs, HierarchicalFedAvg
from resonfl.fl.workflows import ScatterAndGather

__all__ = [
    "Aggregator",
    "AggregatorState",
    "ComponentError",
    "Cyclic",
    "CyclicAggregator",
    "DuplicateUpdateError",
    "FLError",
    "FedAdagrad",
    "FedAdagradArgs",
    "FedAdam",
    "FedAdamArgs",
    "FedAvg",
    "FedAvgM",
    "FedAvgMArgs",
    "FedOpt",
    "FedOptArgs",
    "FedProx",
    "FedProxArgs",
    "FedYogi",
    "FedYogiArgs",
    "HierarchicalArgs",
    "HierarchicalFedAvg",
    "InvalidUpdateError",
    "ModelNotBoundError",
    "NoArgs",
    "NoUpdatesError",
    "NonFiniteUpdateError",
    "RoundClosedError",
    "RoundNotStartedError",
    "ScatterAndGather",
    "StateDict",
    "StateMismatchError",
    "UnknownSiteError",
    "WeightedSum",
    "WeightsMismatchError",
    "Workflow",
    "WorkflowArgs",
    "dump_state",
    "load_state",
    "parameter_names",
    "proximal_term",
    "resolve_class",
    "weighted_metrics",
]
