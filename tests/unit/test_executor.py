"""The client executor: its protocol with the runner and the helper kit's built-in fixes.

The protocol tests run ``custom_client_executor.py --task`` as a child process on a rendered
digits job, exactly as a site worker does; the kit's pure behaviours run in process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from resonfl.catalog import get_example, make_job
from resonfl.templates import custom_client_executor as kit

LR, WARMUP, STEPS, ROUNDS = 0.01, 3, 5, 2

RECORDING_SUFFIX = '''

_standard_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    """Record what the train function sees, then train as usual."""
    import json
    import os

    names = ["CURRENT_ROUND", "NUM_ROUNDS", "SITE_NAME", "DATA_ROOT", "STATE_DIR", "MY_FLAG", "MY_RATE"]
    seen = {name: os.environ.get(name) for name in names}
    seen["env"] = {"round": env.current_round, "num_rounds": env.num_rounds, "site": env.site_name}
    with open(os.path.join(out_dir, f"env_{env.current_round}.json"), "w") as fh:
        json.dump(seen, fh)
    return _standard_train(model, env, out_dir, logger)
'''

FAILING_SUFFIX = """

def fl_train_model(model, env, out_dir, logger):
    raise ValueError("boom in round " + str(env.current_round))
"""


def render_digits(tmp: Path, suffix: str, **training: Any) -> Path:
    job = make_job(
        "digits", ["site-a"], num_rounds=ROUNDS, shards_dir=tmp / "job" / "shards", split="iid"
    )
    source = job.model.source + suffix
    job = job.model_copy(
        update={
            "model": job.model.model_copy(update={"source": source}),
            "training": job.training.model_copy(update=training),
        }
    )
    return job.render(tmp / "job")


def initial_weights(path: Path) -> dict[str, torch.Tensor]:
    info = get_example("digits")
    from resonfl.catalog import load_model_def

    torch.manual_seed(0)
    model = getattr(load_model_def("digits"), info.model["class_name"])(**info.model["args"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state


def make_task(tmp: Path, job_dir: Path, rnd: int, weights_in: Path) -> dict[str, Any]:
    return {
        "job_dir": str(job_dir),
        "site": "site-a",
        "round": rnd,
        "num_rounds": ROUNDS,
        "weights_in": str(weights_in),
        "weights_out": str(tmp / f"out_{rnd}.safetensors"),
        "result_out": str(tmp / f"result_{rnd}.json"),
        "out_dir": str(tmp / "train_out"),
        "data_root": str(job_dir / "shards" / "site-a"),
        "state_dir": str(tmp / "state"),
        "task_args": {},
    }


def run_executor(
    tmp: Path, job_dir: Path, task: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    task_path = tmp / f"task_{task['round']}.json"
    task_path.write_text(json.dumps(task))
    scratch = tmp / "scratch"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(job_dir / "custom_client_executor.py"), "--task", str(task_path)],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two rounds of one site through the child process, EMA and extra keys on."""
    tmp = tmp_path_factory.mktemp("executor")
    job_dir = render_digits(
        tmp,
        RECORDING_SUFFIX,
        lr=LR,
        warmup_steps=WARMUP,
        local_steps=STEPS,
        ema_decay=0.9,
        extra={"MY_FLAG": True, "MY_RATE": 0.5},
    )
    weights = tmp / "global_0.safetensors"
    initial = initial_weights(weights)
    runs, snapshots = [], []
    for rnd in range(ROUNDS):
        task = make_task(tmp, job_dir, rnd, weights)
        runs.append(run_executor(tmp, job_dir, task))
        assert runs[-1].returncode == 0, runs[-1].stderr
        snapshots.append(torch.load(tmp / "state" / "optimizer_state.pt", weights_only=True))
        weights = Path(task["weights_out"])  # one site: its update is the next global model
    return {"tmp": tmp, "job_dir": job_dir, "runs": runs, "initial": initial, "opt": snapshots}


def test_result_file_has_samples_metrics_and_timings(two_rounds: dict[str, Any]) -> None:
    result = json.loads((two_rounds["tmp"] / "result_1.json").read_text())
    assert set(result) == {"samples", "metrics", "train_s", "eval_s", "phases"}
    assert set(result["phases"]) == {
        "import_s", "build_s", "data_s", "eval_s", "train_s", "save_s", "executor_s"
    }  # fmt: skip
    assert all(v >= 0 for v in result["phases"].values())
    assert result["samples"] > 0
    for key in ("global_val_loss", "global_top1", "train_loss", "val_loss", "top1"):
        assert math.isfinite(result["metrics"][key]), key


def test_train_fn_sees_round_site_paths_and_extra_in_environ(two_rounds: dict[str, Any]) -> None:
    tmp, job_dir = two_rounds["tmp"], two_rounds["job_dir"]
    for rnd in range(ROUNDS):
        seen = json.loads((tmp / "train_out" / f"env_{rnd}.json").read_text())
        assert seen["CURRENT_ROUND"] == str(rnd)
        assert seen["NUM_ROUNDS"] == str(ROUNDS)
        assert seen["SITE_NAME"] == "site-a"
        assert seen["DATA_ROOT"] == str(job_dir / "shards" / "site-a")
        assert seen["STATE_DIR"] == str(tmp / "state")
        assert (seen["MY_FLAG"], seen["MY_RATE"]) == ("True", "0.5")
        assert seen["env"] == {"round": rnd, "num_rounds": ROUNDS, "site": "site-a"}


def test_weights_out_is_a_full_state_dict_that_trained(two_rounds: dict[str, Any]) -> None:
    out = load_file(str(two_rounds["tmp"] / "out_0.safetensors"))
    initial = two_rounds["initial"]
    assert set(out) == set(initial)
    assert any(not torch.equal(out[k], initial[k]) for k in initial)


def test_optimizer_state_is_saved_and_its_step_count_continues(two_rounds: dict[str, Any]) -> None:
    first, second = two_rounds["opt"]
    assert (first["round"], second["round"]) == (0, 1)

    def step(snap: dict) -> int:
        return int(next(iter(snap["state"]["state"].values()))["step"])

    assert step(first) == STEPS
    assert step(second) == 2 * STEPS  # restored, not rebuilt
    assert "restored optimizer state from round 0" in two_rounds["runs"][1].stdout


def expected_lr(position: int) -> float:
    """Warmup then cosine over ROUNDS * STEPS, computed by hand."""
    if position < WARMUP:
        return LR * (position + 1) / WARMUP
    progress = (position - WARMUP) / (ROUNDS * STEPS - WARMUP)
    return LR * 0.5 * (1 + math.cos(math.pi * progress))


def test_continuous_schedule_starts_round_one_where_round_zero_stopped(
    two_rounds: dict[str, Any],
) -> None:
    tmp = two_rounds["tmp"]
    r0 = json.loads((tmp / "result_0.json").read_text())["metrics"]
    r1 = json.loads((tmp / "result_1.json").read_text())["metrics"]
    assert r0["lr_start"] == pytest.approx(expected_lr(0))
    assert r1["lr_start"] == pytest.approx(expected_lr(STEPS))  # position = round * steps
    assert r1["lr_end"] == pytest.approx(expected_lr(2 * STEPS))


def test_only_the_ema_schedule_is_persisted_never_the_averaged_weights(
    two_rounds: dict[str, Any],
) -> None:
    saved = torch.load(two_rounds["tmp"] / "state" / "ema_state.pt", weights_only=True)
    assert saved == {"run_id": None, "round": 1, "updates": 2 * STEPS}
    assert "decay schedule at step 5" in two_rounds["runs"][1].stdout


def test_a_failing_train_fn_writes_the_error_and_exits_1(tmp_path: Path) -> None:
    job_dir = render_digits(tmp_path, FAILING_SUFFIX, local_steps=STEPS)
    weights = tmp_path / "global.safetensors"
    initial_weights(weights)
    task = make_task(tmp_path, job_dir, 0, weights)
    proc = run_executor(tmp_path, job_dir, task)
    assert proc.returncode == 1
    assert json.loads(Path(task["result_out"]).read_text()) == {
        "error": "ValueError: boom in round 0"
    }
    assert "Traceback" in proc.stderr
    assert not Path(task["weights_out"]).exists()


def test_weights_that_do_not_fit_the_model_are_an_error(tmp_path: Path) -> None:
    job_dir = render_digits(tmp_path, "", local_steps=STEPS)
    weights = tmp_path / "bad.safetensors"
    save_file({"nope": torch.zeros(2)}, str(weights))
    task = make_task(tmp_path, job_dir, 0, weights)
    result = kit.run_task(task)
    assert result["error"].startswith("RuntimeError: Error(s) in loading state_dict")
    assert json.loads(Path(task["result_out"]).read_text()) == result


# ---------------------------------------------------------------- the kit, in process
def make_env(
    tmp: Path, rnd: int = 0, task_args: dict[str, Any] | None = None, **args: Any
) -> kit.FLEnv:
    task = {
        "site": "s",
        "round": rnd,
        "num_rounds": 4,
        "data_root": str(tmp),
        "state_dir": str(tmp / "state"),
        "out_dir": str(tmp),
        "task_args": task_args or {},
    }
    base = {"lr": 0.1, "local_steps": 10, "warmup_steps": 4, "batch_size": 4}
    return kit.FLEnv(task, {**base, **args}, device=torch.device("cpu"))


def test_without_continuous_schedule_every_round_restarts_it(tmp_path: Path) -> None:
    restart = [make_env(tmp_path, r, continuous_schedule=False) for r in range(3)]
    lrs = [[env.lr_at(step, 10) for step in range(10)] for env in restart]
    assert lrs[0] == lrs[1] == lrs[2]
    assert lrs[0][0] == pytest.approx(0.1)  # warmup share kept: 4 of 40 steps → 1 of 10
    continuous = make_env(tmp_path, 1)
    assert continuous.lr_at(0, 10) == pytest.approx(make_env(tmp_path, 0).lr_at(10, 10))


class LeftHalf(nn.Module):
    """Scores depend on where the mass sits along the last axis: not mirror-invariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[..., : x.shape[-1] // 2].flatten(1).sum(dim=1)
        right = x[..., x.shape[-1] // 2 :].flatten(1).sum(dim=1)
        return torch.stack([left, right], dim=1)


def test_tta_hflip_averages_logits_with_the_mirrored_input(tmp_path: Path) -> None:
    x = torch.zeros(4, 1, 2, 4)  # images: (N, C, H, W)
    x[..., 0] = 1.0  # all mass on the left
    data = torch.utils.data.TensorDataset(x, torch.zeros(4, dtype=torch.int64))
    plain = make_env(tmp_path, tta_hflip=False).evaluate(LeftHalf(), data)
    tta = make_env(tmp_path, tta_hflip=True).evaluate(LeftHalf(), data)
    assert plain["top1"] == 1.0
    assert tta["val_loss"] == pytest.approx(math.log(2))  # logits (2, 2) after averaging
    assert tta["val_loss"] > plain["val_loss"]


def test_fedprox_keeps_local_weights_near_the_round_start(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 3), torch.randint(0, 2, (32,)))
    drift = {}
    for mu in (0.0, 10.0):
        model = nn.Linear(3, 2)
        torch.nn.init.zeros_(model.weight)
        env = make_env(
            tmp_path / str(mu),
            task_args={"fedprox_mu": mu},
            persist_optimizer_state=False,
            lr=0.5,
            warmup_steps=0,
        )
        env.fit(model, data)
        drift[mu] = float(model.weight.detach().norm())
    assert drift[10.0] < drift[0.0] * 0.7


def test_label_smoothing_applies_to_training_loss_only(tmp_path: Path) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
    losses = {}
    for smoothing in (0.0, 0.3):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        env = make_env(
            tmp_path / str(smoothing),
            label_smoothing=smoothing,
            local_steps=1,
            persist_optimizer_state=False,
        )
        before = env.evaluate(model, data)["val_loss"]
        losses[smoothing] = (env.fit(model, data)["metrics"]["train_loss"], before)
    assert losses[0.0][1] == pytest.approx(losses[0.3][1])  # eval: hard-label CE either way
    assert losses[0.0][0] != pytest.approx(losses[0.3][0])


# ------------------------------------------------------------------ serve mode (JobSession)
SERVE_SUFFIX = RECORDING_SUFFIX + '''

_recording_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    """Record the process and what an earlier round left in the environment, then leave some."""
    import json
    import os

    import tempfile

    seen = {"pid": os.getpid(), "leak": os.environ.get("LEAKED_BY_ROUND"), "cwd": os.getcwd(),
            "home": os.environ.get("HOME"), "tmp": tempfile.gettempdir()}
    with open(os.path.join(out_dir, f"serve_{env.current_round}.json"), "w") as fh:
        json.dump(seen, fh)
    os.environ["LEAKED_BY_ROUND"] = str(env.current_round)
    print("printed by round", env.current_round)
    return _recording_train(model, env, out_dir, logger)
'''

CRASH_SUFFIX = '''

_standard_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    import os

    with open(os.path.join(out_dir, f"pid_{env.current_round}"), "w") as fh:
        fh.write(str(os.getpid()))
    if env.current_round == 0:
        print("about to crash", flush=True)
        os._exit(3)
    return _standard_train(model, env, out_dir, logger)
'''


def test_serve_mode_runs_rounds_in_one_process_exactly_as_task_mode(
    tmp_path: Path, two_rounds: dict[str, Any]
) -> None:
    from resonfl.runner import SessionPool, WarmPool
    from resonfl.runner.confine import Binds

    job_dir = render_digits(
        tmp_path, SERVE_SUFFIX, lr=LR, warmup_steps=WARMUP, local_steps=STEPS, ema_decay=0.9,
        extra={"MY_FLAG": True, "MY_RATE": 0.5},
    )
    weights = tmp_path / "global_0.safetensors"
    initial_weights(weights)
    logs = []
    with WarmPool() as pool, SessionPool(pool) as sessions:
        session = sessions.session("job-1", {})
        for rnd in range(ROUNDS):
            task = make_task(tmp_path, job_dir, rnd, weights)
            task_path = tmp_path / f"task_{rnd}.json"
            task_path.write_text(json.dumps(task))
            work = tmp_path / f"work_{rnd}"
            work.mkdir()
            run = session.run_round(job_dir / "custom_client_executor.py", task_path, work, rnd, 120,
                                    binds=Binds.of(rw=[tmp_path]))  # job, data, outputs: all here
            assert run.returncode == 0, run.log
            logs.append(run.log)
            weights = Path(task["weights_out"])
        assert session.starts == 1 and session.pid is not None

    out = tmp_path / "train_out"
    serve = [json.loads((out / f"serve_{rnd}.json").read_text()) for rnd in range(ROUNDS)]
    assert serve[0]["pid"] == serve[1]["pid"]  # one process for both rounds
    assert [s["leak"] for s in serve] == [None, None]  # the environment is set anew each round
    for rnd in range(ROUNDS):
        assert serve[rnd]["cwd"] == serve[rnd]["home"] == str(tmp_path / f"work_{rnd}")
        assert serve[rnd]["tmp"] == str(tmp_path / f"work_{rnd}" / "tmp")
        seen = json.loads((out / f"env_{rnd}.json").read_text())
        assert seen["CURRENT_ROUND"] == str(rnd) and seen["MY_FLAG"] == "True"
        assert f"printed by round {rnd}" in logs[rnd] and f"[site-a r{rnd}]" in logs[rnd]
        assert f"printed by round {1 - rnd}" not in logs[rnd]  # each round its own log
    assert "restored optimizer state from round 0" in logs[1]
    # Bit for bit what a fresh process per round produced (same seeds, same state files).
    for rnd in range(ROUNDS):
        mine = load_file(str(tmp_path / f"out_{rnd}.safetensors"))
        fresh = load_file(str(two_rounds["tmp"] / f"out_{rnd}.safetensors"))
        for key, value in fresh.items():
            assert torch.equal(mine[key], value), (rnd, key)
        assert json.loads((tmp_path / f"result_{rnd}.json").read_text())["metrics"]["train_loss"] == (
            json.loads((two_rounds["tmp"] / f"result_{rnd}.json").read_text())["metrics"]["train_loss"]
        )


def test_a_crashed_round_is_reported_and_the_next_runs_in_a_fresh_process(tmp_path: Path) -> None:
    from resonfl.runner import SandboxError, SessionPool, WarmPool, run_site_round

    job_dir = render_digits(tmp_path, CRASH_SUFFIX, local_steps=STEPS)
    weights = tmp_path / "global.safetensors"
    initial_weights(weights)
    kwargs = {"data_root": job_dir / "shards" / "site-a", "state_dir": tmp_path / "state",
              "timeout_s": 120}
    with WarmPool() as pool, SessionPool(pool) as sessions:
        session = sessions.session("job-1", {})
        with pytest.raises(SandboxError, match="about to crash|exit code 3") as crash:
            run_site_round(job_dir, "site-a", 0, ROUNDS, weights, work_dir=tmp_path / "w0",
                           session=session, **kwargs)
        assert "about to crash" in crash.value.log
        assert session.pid is None  # discarded
        result = run_site_round(job_dir, "site-a", 1, ROUNDS, weights, work_dir=tmp_path / "w1",
                                session=session, **kwargs)
        assert result.samples > 0 and session.starts == 2
    # Both ran (in a sandbox each process is pid 1 of its own namespace, so `starts` above,
    # not the pid, tells the two processes apart).
    assert (tmp_path / "w0" / "out" / "pid_0").is_file()
    assert (tmp_path / "w1" / "out" / "pid_1").is_file()


# ---------------------------------------------------------------- EMA under every workflow
EMA_DATA = {
    "a": torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,))),
    "b": torch.utils.data.TensorDataset(torch.randn(16, 3) + 1, torch.randint(0, 2, (16,))),
}
EMA_STEPS = 6
EMA_PLANS = {  # who trains in rounds 0, 1, 2
    "fedavg": [["a", "b"], ["a", "b"], ["a", "b"]],
    "cyclic": [["a"], ["b"], ["a"]],
    "partial participation": [["a", "b"], ["a"], ["a", "b"]],
}


def ema_round(state_dir: Path, rnd: int, received: dict[str, torch.Tensor], site: str) -> dict:
    """One site's round through the kit's standard loop, EMA on; returns what it submits."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    model.load_state_dict(received)
    env = make_env(
        state_dir.parent,
        rnd,
        ema_decay=0.9,
        optimizer="sgd",
        momentum=0.0,
        persist_optimizer_state=False,
        local_steps=EMA_STEPS,
        warmup_steps=0,
    )
    env.state_dir = state_dir
    env.fit(model, EMA_DATA[site])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("workflow", list(EMA_PLANS))
def test_ema_restarts_from_the_received_global_under_every_workflow(
    tmp_path: Path, workflow: str
) -> None:
    # Prepare: an in-process FL run; each site keeps its own STATE_DIR across rounds
    torch.manual_seed(1)
    global_w = {k: v.detach().clone() for k, v in nn.Linear(3, 2).state_dict().items()}
    trained = {"a": 0, "b": 0}
    for rnd, sites in enumerate(EMA_PLANS[workflow]):
        submitted = {}
        for site in sites:
            # Execute: the site's round, and a fresh site that knows only the decay schedule
            submitted[site] = ema_round(tmp_path / site / "state", rnd, global_w, site)
            fresh = tmp_path / f"fresh-{site}-{rnd}" / "state"
            fresh.mkdir(parents=True)
            schedule = {"run_id": None, "round": rnd - 1, "updates": trained[site]}
            torch.save(schedule, fresh / "ema_state.pt")
            reference = ema_round(fresh, rnd, global_w, site)
            trained[site] += EMA_STEPS
            # Assert: the site's earlier averages play no part in what it submits
            for key, value in reference.items():
                assert torch.allclose(submitted[site][key], value, atol=1e-7), (rnd, site, key)
        global_w = {
            k: torch.stack([w[k] for w in submitted.values()]).mean(dim=0) for k in global_w
        }


def test_ema_decay_warms_up_over_the_run_not_every_round() -> None:
    ema = kit.EMA({"w": torch.zeros(1)}, decay=0.99)
    assert ema.current_decay() == pytest.approx(0.1)
    resumed = kit.EMA({"w": torch.zeros(1)}, decay=0.99, updates=1000)
    assert resumed.current_decay() == pytest.approx(0.99)


def test_state_saved_by_another_run_is_ignored_not_resumed(tmp_path: Path) -> None:
    # Prepare: run "old" leaves Adam moments in STATE_DIR
    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
    old = make_env(tmp_path, 0, task_args={"run_id": "old"}, local_steps=2)
    old.fit(nn.Linear(3, 2), data)
    assert torch.load(old.optimizer_state_path, weights_only=True)["run_id"] == "old"
    # Execute: a new run's first round with the same STATE_DIR
    new = make_env(tmp_path, 0, task_args={"run_id": "new"}, local_steps=2)
    optimizer = new.make_optimizer(nn.Linear(3, 2))
    # Assert: fresh moments, and the state file now belongs to the new run once saved
    assert optimizer.state_dict()["state"] == {}
    new.save_optimizer_state(optimizer)
    assert torch.load(new.optimizer_state_path, weights_only=True)["run_id"] == "new"


def test_tta_hflip_refuses_input_that_is_not_an_image(tmp_path: Path) -> None:
    rows = torch.utils.data.TensorDataset(torch.randn(4, 6), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"tta_hflip mirrors images .* got \(4, 6\)"):
        make_env(tmp_path, tta_hflip=True).evaluate(nn.Linear(6, 2), rows)


def test_proximal_term_in_a_custom_loop_equals_what_fit_does(tmp_path: Path) -> None:
    # Prepare: the same data, start and mu; one model through env.fit, one through a hand loop
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
    start = {k: v.clone() for k, v in nn.Linear(3, 2).state_dict().items()}
    settings = {
        "optimizer": "sgd",
        "momentum": 0.0,
        "lr": 0.5,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "batch_size": 8,
        "local_steps": 3,
        "persist_optimizer_state": False,
    }
    fitted = nn.Linear(3, 2)
    fitted.load_state_dict(start)
    make_env(tmp_path / "fit", task_args={"fedprox_mu": 5.0}, **settings).fit(fitted, data)
    # Execute: a custom loop adds the term in one call
    custom = nn.Linear(3, 2)
    custom.load_state_dict(start)
    env = make_env(tmp_path / "custom", task_args={"fedprox_mu": 5.0}, **settings)
    env.global_state = start
    opt = torch.optim.SGD(custom.parameters(), lr=0.5)
    x, y = data.tensors
    for _ in range(3):
        loss = nn.functional.cross_entropy(custom(x), y) + env.proximal_term(custom)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Assert
    for key, value in fitted.state_dict().items():
        assert torch.allclose(custom.state_dict()[key], value, atol=1e-6), key
    assert env.proximal_used


def test_proximal_term_is_zero_when_the_job_is_not_fedprox(tmp_path: Path) -> None:
    term = make_env(tmp_path).proximal_term(nn.Linear(3, 2))
    assert float(term) == 0.0


PLAIN_LOOP_SUFFIX = """

def fl_train_model(model, env, out_dir, logger):
    return {"samples": 1, "metrics": {}}
"""


@pytest.mark.parametrize(("suffix", "warns"), [(PLAIN_LOOP_SUFFIX, True), ("", False)])
def test_a_fedprox_round_whose_train_fn_skips_the_term_warns_in_the_site_log(
    tmp_path: Path, suffix: str, warns: bool
) -> None:
    job_dir = render_digits(tmp_path, suffix, local_steps=2)
    weights = tmp_path / "global.safetensors"
    initial_weights(weights)
    task = {**make_task(tmp_path, job_dir, 0, weights), "task_args": {"fedprox_mu": 0.1}}

    run = run_executor(tmp_path, job_dir, task)

    assert run.returncode == 0, run.stderr
    assert ("never called env.proximal_term(model)" in run.stdout) is warns
