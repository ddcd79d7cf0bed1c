"""Workflows: who trains each round, how many results close it; Cyclic's aggregator."""

import pytest
import torch
from pydantic import ValidationError

from resonfl.fl import Cyclic, CyclicAggregator, InvalidUpdateError, ScatterAndGather

SITES = ["site-a", "site-b", "site-c"]


def test_cyclic_visits_sites_in_turn() -> None:
    wf = Cyclic({"num_rounds": 5})
    order = [wf.sites_for_round(r, SITES) for r in range(5)]
    assert order == [["site-a"], ["site-b"], ["site-c"], ["site-a"], ["site-b"]]


def test_cyclic_needs_one_result_per_round() -> None:
    assert Cyclic({"num_rounds": 2, "min_clients": 3}).min_results(1, SITES) == 1


def test_cyclic_aggregator_takes_the_sites_weights() -> None:
    agg = CyclicAggregator()
    agg.reset({"w": torch.zeros(2), "n": torch.tensor(0)}, 0)
    agg.accept("site-a", {"w": torch.tensor([1.5, -2.0]), "n": torch.tensor(7)}, 10)
    out = agg.aggregate()
    assert torch.equal(out["w"], torch.tensor([1.5, -2.0])) and out["n"].item() == 7


def test_cyclic_aggregator_refuses_a_second_site() -> None:
    agg = CyclicAggregator()
    agg.reset({"w": torch.zeros(1)}, 0)
    agg.accept("site-a", {"w": torch.ones(1)}, 1)
    with pytest.raises(InvalidUpdateError, match="site-b"):
        agg.accept("site-b", {"w": torch.ones(1)}, 1)


def test_scatter_and_gather_sends_every_site() -> None:
    assert ScatterAndGather({"num_rounds": 1}).sites_for_round(0, SITES) == SITES


def test_scatter_and_gather_needs_all_sites_by_default() -> None:
    assert ScatterAndGather({"num_rounds": 1}).min_results(0, SITES) == 3


def test_scatter_and_gather_needs_min_clients_when_set() -> None:
    assert ScatterAndGather({"num_rounds": 1, "min_clients": 2}).min_results(0, SITES) == 2


def test_min_clients_above_site_count_raises() -> None:
    with pytest.raises(ValueError, match="min_clients=5"):
        ScatterAndGather({"num_rounds": 1, "min_clients": 5}).min_results(0, SITES)


def test_round_outside_num_rounds_raises() -> None:
    with pytest.raises(ValueError, match="round_num"):
        ScatterAndGather({"num_rounds": 2}).sites_for_round(2, SITES)


def test_bad_workflow_args_name_the_field() -> None:
    with pytest.raises(ValidationError, match="num_rounds"):
        ScatterAndGather({"num_rounds": 0})
    with pytest.raises(ValidationError, match="rounds_typo"):
        Cyclic({"num_rounds": 1, "rounds_typo": 3})


def test_sites_per_round_draws_that_many_at_random_and_keeps_each_rounds_draw() -> None:
    sites = [f"site-{i}" for i in range(10)]
    wf = ScatterAndGather({"num_rounds": 40, "sites_per_round": 3, "min_clients": 5})
    draws = [wf.sites_for_round(r, sites) for r in range(40)]
    assert all(len(d) == 3 and len(set(d)) == 3 and set(d) <= set(sites) for d in draws)
    assert all(d == sorted(d, key=sites.index) for d in draws)  # in the job's order
    assert len({tuple(d) for d in draws}) > 10  # 120 possible draws: not the same one each time
    assert wf.sites_for_round(7, sites) == draws[7]  # asked again: the same sites
    assert wf.min_results(0, sites) == 3  # min_clients 5, but only 3 are asked
    assert wf.sample_rate(sites) == pytest.approx(0.3)
    assert ScatterAndGather({"num_rounds": 1}).sample_rate(sites) == 1.0


def test_sites_per_round_above_the_sites_is_refused_when_the_job_is_validated(
    tiny_model_def: str,
) -> None:
    from resonfl.config import FederationConfig, ModelConfig
    from resonfl.job import Job, JobValidationError

    job = Job(
        name="sampled",
        model=ModelConfig(source=tiny_model_def),
        federation=FederationConfig(
            num_rounds=2, sites=SITES, workflow_args={"sites_per_round": 4}
        ),
    )
    with pytest.raises(JobValidationError, match="sites_per_round=4 but the job has only 3"):
        job.validate()


def test_secure_aggregation_with_fewer_than_three_sites_per_round_is_refused(
    tiny_model_def: str,
) -> None:
    from resonfl.config import FederationConfig, ModelConfig
    from resonfl.job import Job, JobValidationError

    job = Job(
        name="secagg-sampled",
        model=ModelConfig(source=tiny_model_def),
        federation=FederationConfig(
            num_rounds=2,
            sites=["a", "b", "c", "d"],
            workflow_args={"sites_per_round": 2},
            aggregator_path="resonfl.fl.secagg.SecAggFedAvg",
        ),
    )
    with pytest.raises(JobValidationError, match="at least 3 sites in each round"):
        job.validate()
    job.federation.workflow_args = {"sites_per_round": 3}
    job.validate()
