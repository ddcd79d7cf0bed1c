"""The Federation step's notes for robust and private aggregators."""

from resonfl_server.backend.web.guidance import federation_notes


def _titles(raw: dict[str, str]) -> list[str]:
    return [n.title for n in federation_notes(raw, "")]


def test_a_buffered_rule_states_its_memory_cost_for_the_chosen_sites() -> None:
    notes = federation_notes({"aggregator": "coordinatemedian", "sites": "a,b,c"}, "")
    memory = next(n for n in notes if n.title == "Robust rules hold every update in memory")
    assert "3 sites x the model size" in memory.text


def test_krum_warns_that_it_keeps_one_sites_model() -> None:
    assert "Krum keeps one site's model" in _titles({"aggregator": "krum"})
    assert "Krum keeps one site's model" not in _titles({"aggregator": "multikrum"})


def test_fedavg_gets_no_robustness_note() -> None:
    titles = _titles({"aggregator": "fedavg", "sites": "a,b"})
    assert not any("Robust" in t or "clip" in t for t in titles)


def test_norm_clip_points_at_its_bound() -> None:
    note = next(n for n in federation_notes({"aggregator": "normclip"}, "") if "clip" in n.title)
    assert note.field == "normclip__max_norm"


BN_MODEL = "class Net(nn.Module):\n    def __init__(self):\n        self.bn = nn.BatchNorm2d(8)\n"


def test_dp_sgd_warns_about_batchnorm_in_the_model() -> None:
    notes = federation_notes({"aggregator": "dpsgdfedavg"}, BN_MODEL)
    assert "DP-SGD and BatchNorm" in [n.title for n in notes]
    assert "DP-SGD and BatchNorm" not in _titles({"aggregator": "dpsgdfedavg"})


def test_dp_sgd_suggests_the_dp_recipe_for_training() -> None:
    note = next(
        n
        for n in federation_notes({"aggregator": "dpsgdfedavg"}, "")
        if n.title == "DP-SGD wants its own training recipe"
    )
    assert "plain SGD without momentum" in note.text and "batch 64" in note.text
    assert "DP-SGD wants its own training recipe" not in _titles({"aggregator": "dpfedavg"})


def test_dp_fedavg_with_few_sites_warns_that_the_noise_drowns_the_update() -> None:
    note = next(
        n
        for n in federation_notes({"aggregator": "dpfedavg", "sites": "a,b,c,d"}, "")
        if n.title == "Site-level DP needs many sites"
    )
    assert note.level == "warn" and "/ 4 per weight" in note.text


def test_secure_aggregation_says_what_it_hides_and_whether_a_dropout_is_survived() -> None:
    def note(sites: str):  # type: ignore[no-untyped-def]
        notes = federation_notes({"aggregator": "secaggfedavg", "sites": sites}, "")
        return next(n for n in notes if n.title.startswith("Secure aggregation"))

    three, four = note("a,b,c"), note("a,b,c,d")
    assert three.level == "warn" and "cannot survive a dropout" in three.text
    assert four.level == "info" and "survive one dropout" in four.text
    assert "twice the upload" in four.text


def test_dp_fedavg_with_sites_per_round_names_the_sampling_rate() -> None:
    raw = {"aggregator": "dpfedavg", "sites": "a,b,c,d", "sites_per_round": "2"}
    note = next(n for n in federation_notes(raw, "") if n.title == "Site-level DP needs many sites")
    assert "2 of the 4 sites" in note.text and "sampling rate of 0.5" in note.text
