"""The Flower peer of bench/rounds.py: the same models and step in Flower's simulation engine.

Runs only inside bench/.venv-flower (see bench/setup_flower.sh), never in ResonFL's own venv:
Flower is a benchmark dependency, not a runtime one. Prints one JSON line on stdout:
{"model": ..., "rounds": [{"round": n, "round_s": ...}, ...]}.

    bench/.venv-flower/bin/python bench/flower_peer.py --model resnet50 --sites 4 --rounds 6

Each round is timed from the strategy's configure_fit (weights handed to the clients) to the
end of aggregate_fit (the new global weights), the same span as ResonFL's round: the global
model out, every site's step, the update back, FedAvg.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_def import CifarResNet, sgd_step  # noqa: E402

DEPTH = int(os.environ.get("BENCH_DEPTH", "18"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    keys = list(model.state_dict())
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


class BenchClient(NumPyClient):
    def __init__(self, partition: int) -> None:
        torch.set_num_threads(THREADS)
        self.partition = partition
        self.model = CifarResNet(DEPTH)

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        set_weights(self.model, parameters)
        seed = int(config.get("server_round", 0)) * 1000 + self.partition
        samples = sgd_step(self.model, seed)
        return get_weights(self.model), samples, {}


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return BenchClient(int(context.node_config.get("partition-id", 0))).to_client()


class TimedFedAvg(FedAvg):
    """FedAvg that records each round's span: configure_fit to the end of aggregate_fit."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.rounds: list[dict[str, float]] = []

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        out = super().aggregate_fit(server_round, results, failures)
        span = time.perf_counter() - self.started[server_round]
        self.rounds.append({"round": server_round - 1, "round_s": span, "results": len(results)})
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "resnet50"], default="resnet18")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per client")
    ns = parser.parse_args()
    os.environ["BENCH_DEPTH"] = ns.model.removeprefix("resnet")
    os.environ["BENCH_THREADS"] = str(ns.threads)
    global DEPTH
    DEPTH = int(os.environ["BENCH_DEPTH"])
    initial = ndarrays_to_parameters(get_weights(CifarResNet(DEPTH)))
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=ns.sites,
        min_available_clients=ns.sites,
        initial_parameters=initial,
    )

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ns.rounds))

    started = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=ns.sites,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            # one actor per site, all concurrent, as ResonFL runs its 4 sites
            "init_args": {"num_cpus": ns.sites, "include_dashboard": False},
        },
    )
    total = time.perf_counter() - started
    print(json.dumps({"model": ns.model, "total_s": total, "rounds": strategy.rounds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
