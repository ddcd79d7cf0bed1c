"""The aggregator's running folds: bounded in number, closed once their round is taken."""

from __future__ import annotations

from resonfl_server.backend.services.folds import MAX_OPEN, FoldRegistry


def test_running_folds_are_bounded_and_the_oldest_is_dropped() -> None:
    registry = FoldRegistry()
    first = registry.entry(1, 0, "w1")
    for job in range(2, MAX_OPEN + 2):
        registry.entry(job, 0, f"w{job}")
    assert len(registry) == MAX_OPEN
    assert registry.take(1, 0) is None  # dropped: its round is folded at aggregation
    assert first is not None and not first.closed


def test_a_taken_round_is_closed_to_later_messages_and_a_new_round_replaces_the_old() -> None:
    registry = FoldRegistry()
    entry = registry.entry(7, 3, "w")
    assert registry.entry(7, 3, "w") is entry
    taken = registry.take(7, 3)
    assert taken is entry and taken.closed
    assert registry.entry(7, 3, "w") is None  # a late fold message never reopens it
    registry.entry(8, 0, "a")
    registry.entry(8, 1, "b")  # job 8 moved on: its round 0 can never be taken any more
    assert registry.take(8, 0) is None and len(registry) == 1
