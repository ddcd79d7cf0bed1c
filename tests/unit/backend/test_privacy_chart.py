"""The job page plots the privacy budget spent when (and only when) a job reports epsilon."""

from types import SimpleNamespace

from resonfl_server.backend.web.job_view import charts


def _job(site_metrics: dict, round_metrics: dict) -> SimpleNamespace:
    results = [
        SimpleNamespace(site=s, round_num=r, metrics=m) for (s, r), m in site_metrics.items()
    ]
    rounds = [
        SimpleNamespace(number=r, metrics=m, round_s=None, train_s_max=None, overhead_s=None)
        for r, m in round_metrics.items()
    ]
    return SimpleNamespace(sites=["a", "b"], results=results, rounds=rounds, num_rounds=3)


def test_dp_sgd_sites_epsilon_is_plotted_per_site_and_for_the_job() -> None:
    job = _job(
        {
            ("a", 0): {"dp_epsilon": 1.5},
            ("b", 0): {"dp_epsilon": 2.0},
            ("a", 1): {"dp_epsilon": 2.2},
        },
        {0: {"dp_epsilon": 2.0}},
    )
    html = "".join(charts(job))
    assert "Privacy budget spent (epsilon)" in html
    assert "the worst site" in html and "<li>" in html


def test_a_job_without_dp_has_no_privacy_chart() -> None:
    job = _job({("a", 0): {"top1": 0.5}}, {0: {"top1": 0.5}})
    assert "Privacy budget" not in "".join(charts(job))


def test_what_a_robust_aggregator_did_is_plotted() -> None:
    job = _job(
        {}, {0: {"clipped_sites": 1.0, "update_norm_median": 2.5}, 1: {"clipped_sites": 0.0}}
    )
    html = "".join(charts(job))
    assert "What the aggregator did" in html and "sites clipped" in html
    assert "updates Krum kept" not in html
