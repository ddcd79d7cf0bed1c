"""The simulator installs a job's requirements.txt as a site would (uv, the platform's own
packages never reinstalled), here from a local find-links folder of a wheel the test builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from wheel_support import build_wheel

from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job
from resonfl.runner.requirements import RequirementsPolicy
from resonfl.simulate import SimulationError, simulate

USES_PACKAGE = '''
_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    import resonfl_simext

    result = _train(model, env, out_dir, logger)
    result["metrics"]["answer"] = float(resonfl_simext.ANSWER)
    return result
'''


def _job(tmp_path: Path, source: str, requirements: list[str]) -> Path:
    sites = ["site-1", "site-2"]
    for site in sites:
        (tmp_path / "data" / site).mkdir(parents=True)
    return Job(
        name="needs-a-package",
        model=ModelConfig(source=source),
        federation=FederationConfig(num_rounds=1, sites=sites),
        requirements=requirements,
        shards={s: tmp_path / "data" / s for s in sites},
    ).render(tmp_path / "job")


def test_the_simulator_installs_the_jobs_requirements(
    tmp_path: Path, tiny_model_def: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "resonfl_simext", "1.2", "ANSWER = 7\n", requires=("torch",))
    job_dir = _job(tmp_path, tiny_model_def + USES_PACKAGE, ["resonfl-simext"])
    policy = RequirementsPolicy(mode="any", find_links=(str(wheels),), no_index=True)

    result = simulate(job_dir, tmp_path / "ws", progress=False, requirements=policy)

    assert result.rounds[0].metrics["answer"] == 7.0
    assert any((tmp_path / "cache" / "resonfl" / "requirements").glob("*/resonfl_simext"))


def test_a_requirement_that_cannot_be_found_stops_the_simulation(
    tmp_path: Path, tiny_model_def: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    job_dir = _job(tmp_path, tiny_model_def, ["resonfl-nowhere"])
    policy = RequirementsPolicy(mode="any", find_links=(str(tmp_path),), no_index=True)
    with pytest.raises(SimulationError, match="could not install the job's requirements"):
        simulate(job_dir, tmp_path / "ws", progress=False, requirements=policy)
