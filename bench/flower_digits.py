"""The Flower peer of bench/simulator.py: the same digits job in Flower's simulation engine.

Runs only inside bench/.venv-flower (see bench/setup_flower.sh), never in ResonFL's own venv.

    bench/.venv-flower/bin/python bench/flower_digits.py --job J --sites 4 --rounds 20

`J` is the digits job bench/simulator.py rendered (`resonfl init --example digits`). Each
Flower client runs the job's own code: its `model_def.py` (DigitsCNN, `fl_train_model`,
`fl_evaluate_model`) with the job's `custom_client_executor.FLEnv` (AdamW, cosine schedule
with warm-up, 20 local steps, optimizer state kept per site in a state folder, seeds per
round and site), on the same shards (J/shards/site-N). What differs is only the engine:
Flower's simulation (Ray actors, one per site, all concurrent) moving and averaging the
weights instead of ResonFL's simulator. FedAvg weighted by samples, as ours.

Prints one JSON line: the process's wall time is taken by the caller; here each round's span
(configure_fit to the end of aggregate_fit) and the held-out top-1 of the final weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server import ServerApp, ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

JOB = Path(os.environ.get("BENCH_JOB", "."))
STATE = Path(os.environ.get("BENCH_STATE", tempfile.gettempdir()))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "20"))


def _load(path: Path, name: str) -> ModuleType:
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def job_parts() -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The job's model module, executor module, TrainingConfig and model component."""
    config = json.loads((JOB / "config_fed_client.json").read_text(encoding="utf-8"))
    args = config["executors"][0]["executor"]["args"]
    component = next(c for c in config["components"] if c.get("id") == "model")
    model_def = _load(JOB / "model_def.py", "model_def")
    executor = _load(JOB / "custom_client_executor.py", "custom_client_executor")
    return model_def, executor, args, component


def build_model(model_def: Any, component: dict[str, Any]) -> torch.nn.Module:
    cls = getattr(model_def, component["path"].rpartition(".")[2])
    return cls(**component.get("args", {}))


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    keys = list(model.state_dict())
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


class DigitsClient(NumPyClient):
    """One site: the job's own train function through the job's FLEnv, state on disk."""

    def __init__(self, partition: int) -> None:
        torch.set_num_threads(1)
        self.site = f"site-{partition + 1}"
        self.model_def, self.executor, self.args, self.component = job_parts()

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        rnd = int(config.get("server_round", 1)) - 1  # Flower counts from 1, the job from 0
        model = build_model(self.model_def, self.component)
        set_weights(model, parameters)
        work = Path(tempfile.mkdtemp(prefix=f"flower-{self.site}-"))
        task = {
            "job_dir": str(JOB),
            "site": self.site,
            "round": rnd,
            "num_rounds": ROUNDS,
            "weights_in": "",
            "weights_out": str(work / "update.safetensors"),
            "result_out": str(work / "result.json"),
            "out_dir": str(work),
            "data_root": str(JOB / "shards" / self.site),
            "state_dir": str(STATE / self.site),
            "task_args": {"run_id": "flower"},
        }
        env = self.executor.FLEnv(task, self.args, logging.getLogger(self.site))
        env.global_state = {k: v.clone() for k, v in model.state_dict().items()}
        for folder in (env.state_dir, env.out_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.model_def.fl_evaluate_model(model, env, logging.getLogger(self.site))
        out = self.model_def.fl_train_model(model, env, work, logging.getLogger(self.site))
        samples = int(out["samples"]) if isinstance(out, dict) else int(out)
        return get_weights(model), samples, {}


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return DigitsClient(int(context.node_config.get("partition-id", 0))).to_client()


class TimedFedAvg(FedAvg):
    """FedAvg that records each round's span and keeps the last global weights."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.rounds: list[dict[str, float]] = []
        self.final: Any = None

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        out = super().aggregate_fit(server_round, results, failures)
        span = time.perf_counter() - self.started[server_round]
        self.rounds.append({"round": server_round - 1, "round_s": span, "results": len(results)})
        self.final = out[0]
        return out


def held_out_top1(model_def: Any, component: dict[str, Any], weights: list[np.ndarray]) -> float:
    model = build_model(model_def, component)
    set_weights(model, weights)
    model.eval()
    test = np.load(JOB / "shards" / "test.npz")
    with torch.no_grad():
        pred = model(torch.as_tensor(test["X"]).float()).argmax(1).numpy()
    return float((pred == test["y"]).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="flower-digits-state-"))
    os.environ.update(
        BENCH_JOB=str(ns.job.resolve()), BENCH_STATE=str(state), BENCH_ROUNDS=str(ns.rounds)
    )
    global JOB, STATE, ROUNDS
    JOB, STATE, ROUNDS = ns.job.resolve(), state, ns.rounds
    model_def, _, _, component = job_parts()
    torch.manual_seed(0)  # ResonFL's persistor seeds the initial model with the job's seed
    initial = ndarrays_to_parameters(get_weights(build_model(model_def, component)))
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
            "init_args": {"num_cpus": ns.sites, "include_dashboard": False},
        },
    )
    total = time.perf_counter() - started
    top1 = held_out_top1(model_def, component, parameters_to_ndarrays(strategy.final))
    print(
        json.dumps({"total_s": total, "rounds": strategy.rounds, "held_out_top1": top1}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
