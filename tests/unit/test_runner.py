"""The sandbox: job code runs in a fresh process with a scrubbed environment and a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job
from resonfl.runner import (
    SandboxCancelled,
    SandboxTimeout,
    WarmPool,
    WarmInit,
    init_global_weights,
    run_sandboxed,
)
from resonfl.templates.custom_persistor import (
    PersistorError,
    PTFileModelPersistor,
    load_state_dict_file,
)


def test_job_process_does_not_see_server_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESONFL_SECRET_KEY", "s3cret")
    monkeypatch.setenv("RESONFL_SITE_TOKEN", "tok")
    script = "import json, os; print(json.dumps(dict(os.environ)))"

    run = run_sandboxed([sys.executable, "-c", script], tmp_path, timeout_s=60,
                        env_extra={"CUDA_VISIBLE_DEVICES": "1"})

    env = json.loads(run.log)
    assert run.returncode == 0
    assert "RESONFL_SECRET_KEY" not in env and "RESONFL_SITE_TOKEN" not in env
    assert env["HOME"] == str(tmp_path) and env["CUDA_VISIBLE_DEVICES"] == "1"


def test_job_process_runs_in_its_own_folder(tmp_path: Path) -> None:
    run = run_sandboxed([sys.executable, "-c", "import os; print(os.getcwd())"], tmp_path / "w", 60)

    assert run.log.strip() == str(tmp_path / "w")


def test_time_limit_kills_the_process_and_its_children(tmp_path: Path) -> None:
    token = f"time.sleep(60.{os.getpid()})"  # names the child in `ps`, outside the sandbox too
    script = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; {token}']);"
        "print('started', flush=True);"
        "time.sleep(60)"
    )
    started = time.monotonic()

    with pytest.raises(SandboxTimeout) as caught:
        run_sandboxed([sys.executable, "-c", script], tmp_path / "w", timeout_s=3)

    assert "started" in caught.value.log
    assert time.monotonic() - started < 20
    assert _gone(token)


def _gone(token: str, within_s: float = 10.0) -> bool:
    """No live process names ``token`` within ``within_s`` (a SIGKILLed group is reaped by
    the kernel a moment later; on a loaded machine that moment can pass half a second)."""
    deadline = time.monotonic() + within_s
    while _running_with(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _running_with(token: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _alive(int(entry)):
            try:
                if token in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_initial_weights_come_from_a_fresh_model(tmp_path: Path, tiny_model_def: str) -> None:
    job = Job(name="t", model=ModelConfig(source=tiny_model_def, args={"width": 5}),
              federation=FederationConfig(sites=["s1"]))
    job_dir = job.render(tmp_path / "job")

    out = init_global_weights(job_dir, tmp_path / "init.safetensors", tmp_path / "work", 120).path

    weights = load_state_dict_file(out)
    assert weights["fc1.weight"].shape == (5, 4)
    assert weights["bn.num_batches_tracked"].dtype == torch.int64


def test_persistor_writes_rolling_and_per_round_files(tmp_path: Path) -> None:
    persistor = PTFileModelPersistor(tmp_path)
    for n in range(3):
        persistor.save_round({"w": torch.full((2,), float(n))}, n)
    persistor.save_final({"w": torch.ones(2)})

    assert persistor.rounds_saved() == [0, 1, 2]
    assert torch.equal(load_state_dict_file(tmp_path / "files_out" / "GLOBAL_MODEL.pt")["w"], torch.full((2,), 2.0))
    assert torch.equal(load_state_dict_file(tmp_path / "model_out" / "checkpoint.pt")["w"], torch.ones(2))
    assert not [p for p in (tmp_path / "files_out").iterdir() if p.name.endswith(".tmp")]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_persistor_refuses_a_pickle_with_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": _Evil()}, path)

    with pytest.raises(PersistorError, match="weights-only"):
        load_state_dict_file(path)


def test_job_process_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    token = f"time.sleep(60.{os.getpid()}1)"
    work = tmp_path / "w"
    job_code = f"import time; open('started', 'w').write('1'); {token}"
    starter = tmp_path / "starter.py"
    starter.write_text(
        "import sys, pathlib\n"
        "from resonfl.runner import run_sandboxed\n"
        f"run_sandboxed([sys.executable, '-c', {job_code!r}], pathlib.Path({str(work)!r}), 120)\n"
    )
    parent = subprocess.Popen([sys.executable, str(starter)])
    deadline = time.monotonic() + 30
    while not (work / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running_with(token)

    parent.kill()  # SIGKILL: no cleanup code runs in the parent
    parent.wait()

    assert _gone(token)


def test_a_pre_started_process_runs_the_task_with_the_same_isolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESONFL_SECRET_KEY", "s3cret")
    script = tmp_path / "job.py"
    script.write_text(
        "import json, os, sys\n"
        "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ), 'argv': sys.argv}))\n"
        "sys.exit(3)\n"
    )
    with WarmPool() as pool:
        pool.fill({"CUDA_VISIBLE_DEVICES": "0"})
        run = run_sandboxed([sys.executable, str(script), "--x"], tmp_path / "w", 60,
                            env_extra={"CUDA_VISIBLE_DEVICES": "0"}, pool=pool)

    seen = json.loads(run.log)
    assert run.returncode == 3
    assert seen["cwd"] == str(tmp_path / "w") and seen["argv"] == [str(script), "--x"]
    assert "RESONFL_SECRET_KEY" not in seen["env"]
    assert seen["env"]["HOME"] == str(tmp_path / "w") and seen["env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_pool_made_without_refill_starts_nothing_after_its_fill() -> None:
    """The simulator's pool: one process per site, no replacement torch imports."""
    with WarmPool(size=2, refill=False) as pool:
        pool.fill()
        taken = [pool.take(None), pool.take(None)]
        assert all(p is not None and p.poll() is None for p in taken)
        time.sleep(0.5)  # a refill would have been requested on the pool's thread by now
        assert pool.take(None) is None  # nothing idle, and nothing was started behind our back
        started = pool.take(None, start=True)  # but asking for one still starts one
        assert started is not None
        for proc in [*taken, started]:
            assert proc is not None
            proc.kill()
            proc.wait()


def test_a_pre_started_process_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(60)\n")
    with WarmPool() as pool:
        pool.fill()
        with pytest.raises(SandboxTimeout):
            run_sandboxed([sys.executable, str(script)], tmp_path / "w", 2, pool=pool)


def test_the_same_job_starts_from_the_same_initial_weights(tmp_path: Path, tiny_model_def: str) -> None:
    job = Job(name="t", model=ModelConfig(source=tiny_model_def),
              federation=FederationConfig(sites=["s1"]))
    job_dir = job.render(tmp_path / "job")

    first = load_state_dict_file(init_global_weights(job_dir, tmp_path / "a.safetensors", tmp_path / "w1", 120).path)
    second = load_state_dict_file(init_global_weights(job_dir, tmp_path / "b.safetensors", tmp_path / "w2", 120).path)

    assert torch.equal(first["fc1.weight"], second["fc1.weight"])


def test_the_initial_weights_step_runs_in_the_process_started_before_the_job(
    tmp_path: Path, tiny_model_def: str
) -> None:
    job = Job(name="t", model=ModelConfig(source=tiny_model_def),
              federation=FederationConfig(sites=["s1"]))
    job_dir = job.render(tmp_path / "job")
    cold = init_global_weights(job_dir, tmp_path / "a.safetensors", tmp_path / "w1", 120)
    warm = WarmInit(tmp_path / "slots")  # as the aggregator does when it starts
    try:
        first = init_global_weights(job_dir, tmp_path / "b.safetensors", tmp_path / "w2", 120, warm)
        second = init_global_weights(job_dir, tmp_path / "c.safetensors", tmp_path / "w3", 120, warm)
    finally:
        warm.close()

    assert cold.phases["warm"] is False and first.phases["warm"] is True
    assert second.phases["warm"] is True  # its replacement was started for the next job
    assert {"process_s", "build_s", "save_s", "total_s"} <= set(first.phases)
    for result in (first, second):
        assert torch.equal(load_state_dict_file(result.path)["fc1.weight"],
                           load_state_dict_file(cold.path)["fc1.weight"])
    assert not (tmp_path / "w2").exists() and list((tmp_path / "slots").iterdir()) == []


def test_a_stop_request_kills_the_run_within_one_poll(tmp_path: Path) -> None:
    asked = time.monotonic() + 1.0
    started = time.monotonic()

    with pytest.raises(SandboxCancelled, match="job cancelled"):
        run_sandboxed(
            [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"],
            tmp_path / "w", 120,
            should_stop=lambda: "job cancelled" if time.monotonic() > asked else None,
            poll_s=0.2,
        )

    assert time.monotonic() - started < 10


STUCK_SERVER = """
import json, os, subprocess, sys, time
request = json.loads(sys.stdin.readline())  # the round's request
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120.%d)" % int(sys.argv[-1])])
open(request["cwd"] + "/pid", "w").write(str(os.getpid()))
time.sleep(120)
"""


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_job_process_kept_across_rounds_is_killed_at_the_limit_or_on_stop(
    tmp_path: Path, stop: str
) -> None:
    from resonfl.runner import SessionPool

    script = tmp_path / "server.py"
    script.write_text(STUCK_SERVER)
    (tmp_path / "task.json").write_text("{}")
    work = tmp_path / "w"
    work.mkdir()
    started = time.monotonic()
    with WarmPool() as pool, SessionPool(pool) as sessions:
        session = sessions.session("job-1")
        expected = SandboxTimeout if stop == "timeout" else SandboxCancelled
        with pytest.raises(expected):
            session.run_round(
                script, tmp_path / "task.json", work, 0, 15 if stop == "timeout" else 120,
                should_stop=lambda: "job cancelled" if (work / "pid").exists() else None,
                poll_s=0.3 if stop == "cancel" else 60.0,
            )
        assert session.pid is None
    assert time.monotonic() - started < 60
    assert (work / "pid").exists()
    assert _gone("time.sleep(120.1)")  # its child, killed with it


def test_closing_a_job_ends_its_process_and_sessions_are_per_job(tmp_path: Path) -> None:
    from resonfl.runner import SessionPool

    with WarmPool() as pool, SessionPool(pool, max_sessions=1) as sessions:
        a = sessions.session("job-1", {"X": "1"})
        assert sessions.session("job-1", {"X": "1"}) is a
        a.proc = first = pool.take({"X": "1"}, start=True)  # as if job-1 had run a round
        b = sessions.session("job-2", {"X": "1"})  # another job never gets job-1's process,
        assert b is not a and a.pid is None  # and (one at a time) job-1's is closed for it
        assert first is not None and first.poll() is not None
        b.proc = second = pool.take({"X": "1"}, start=True)
        sessions.close_job("job-2")  # the job ended
        assert b.pid is None and second is not None and second.poll() is not None
        assert sessions.session("job-2", {"X": "1"}) is not b
