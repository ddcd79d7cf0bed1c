"""The one round loop: open a round, fold updates as they arrive, aggregate, persist.

Every caller runs a round through `fold_round`: the platform's aggregation task
(`backend/services/rounds.py`, which keeps the exactly-once claim and the job store), the local
simulator (`resonfl/simulate.py`) and the in-process results loop (`resonfl/catalog/inprocess.py`).
Like NVIDIA FLARE's scatter-and-gather controller, but as one pure function:

    restore   the aggregator's server state saved after round r-1 (FedOpt moments), if any
    open      ``aggregator.reset(global, r)``
    fold      each `SiteUpdate` in arrival order: its weights are loaded only when folded and
              dropped right after, so memory is the global model, the accumulator and one
              update, however many sites report (a refused update changes nothing)
    close     too few accepted -> `RoundTooSmallError`; else ``aggregator.aggregate()``;
              its ``round_metrics()`` join the sites' weighted metrics, and its
              ``stop_reason()`` (a privacy budget spent) makes this round the final one
    persist   ``persistor.save_round`` (and ``save_final`` after the last round), then the
              aggregator's state for round r (atomic file), so a restarted server resumes
              from the last persisted round

Running a round twice from the same inputs gives the same weights and the same files (round
r's state is read from r-1's file, never from r's): that is what lets the platform re-run an
aggregation whose worker died. Pure torch: no web, database or Celery imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from resonfl.fl.base import (
    Aggregator,
    FLError,
    InvalidUpdateError,
    StateDict,
    dump_state,
    load_state,
    weighted_metrics,
)

STATE_FILE = "aggregator_round_{}.safetensors"


class Persistor(Protocol):
    """What the loop needs of a persistor (the job's ``PTFileModelPersistor`` fits)."""

    def save_round(self, weights: StateDict, round_num: int) -> Any: ...

    def save_final(self, weights: StateDict) -> Any: ...


@dataclass(frozen=True)
class SiteUpdate:
    """One site's answer to a round: a lazily loaded update, or the reason it has none.

    ``load`` reads the weights (e.g. a safetensors file) when the loop folds them; whatever it
    raises refuses the update with that message (a site's file is untrusted input).
    """

    site: str
    samples: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    load: Callable[[], StateDict] | None = None
    error: str | None = None

    @classmethod
    def failed(cls, site: str, error: str) -> SiteUpdate:
        return cls(site=site, error=error)


@dataclass
class RoundOutcome:
    """A folded round: the new global weights and what each site contributed."""

    round_num: int
    weights: StateDict
    accepted: list[str]
    refused: dict[str, str]
    samples: dict[str, int]
    site_metrics: dict[str, dict[str, float]]
    metrics: dict[str, float]
    stopped: str | None = None  # why the job ends after this round (its weights are final)


class RoundTooSmallError(FLError):
    """Fewer usable updates than the round needs; nothing was aggregated or persisted."""

    def __init__(self, round_num: int, accepted: int, needed: int, refused: dict[str, str]):
        self.round_num, self.accepted, self.needed, self.refused = (
            round_num,
            accepted,
            needed,
            refused,
        )
        detail = "; ".join(f"{s}: {m}" for s, m in refused.items())
        super().__init__(
            f"round {round_num}: {accepted} usable result(s), {needed} needed (min_clients). "
            f"{detail}".strip()
        )


class AggregatorStateStore:
    """The aggregator's server state after each round, one atomic file per round in a folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, round_num: int) -> Path:
        return self.folder / STATE_FILE.format(round_num)

    def save(self, aggregator: Aggregator, round_num: int) -> Path:
        """Write the state after ``round_num`` (temp file, fsync, rename: never half written)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(round_num)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(dump_state(aggregator.state_dict()))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return target

    def restore(self, aggregator: Aggregator, round_num: int) -> bool:
        """Load the state saved after round ``round_num - 1``; False when there is none."""
        source = self.path(round_num - 1)
        if round_num <= 0 or not source.is_file():
            return False
        aggregator.load_state_dict(load_state(source.read_bytes()))
        return True


class RoundFold:
    """One round of the loop, opened now and folded one update at a time, as each arrives.

    The platform's aggregator opens it when a round's first update is in and folds each later
    one when its message comes, so the fold hides behind the slowest site; `fold_round` is
    the same thing over an iterable. A site is folded at most once: `fold` of a site already
    folded (or refused) changes nothing and returns None, so a redelivered message is harmless.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        global_weights: StateDict,
        round_num: int,
        *,
        state: AggregatorStateStore | None = None,
    ) -> None:
        if state is not None:
            state.restore(aggregator, round_num)
        aggregator.reset(global_weights, round_num)
        self.aggregator, self.round_num = aggregator, round_num
        self.accepted: list[str] = []
        self.refused: dict[str, str] = {}
        self.samples: dict[str, int] = {}
        self.site_metrics: dict[str, dict[str, float]] = {}

    @property
    def seen(self) -> frozenset[str]:
        """Sites folded or refused so far."""
        return frozenset(self.accepted) | frozenset(self.refused)

    def fold(self, update: SiteUpdate) -> str | None:
        """Fold one update; the reason it was refused, or None (also for a site seen before)."""
        if update.site in self.seen:
            return None
        reason = _fold_one(self.aggregator, update)
        if reason is not None:
            self.refused[update.site] = reason
            return reason
        self.accepted.append(update.site)
        self.samples[update.site] = int(update.samples)
        self.site_metrics[update.site] = dict(update.metrics)
        return None

    def close(
        self,
        *,
        needed: int,
        persistor: Persistor | None = None,
        state: AggregatorStateStore | None = None,
        final: bool = False,
    ) -> RoundOutcome:
        """Aggregate and persist (see the module's loop); RoundTooSmallError below `needed`."""
        accepted = list(self.accepted)
        if len(accepted) < needed:
            raise RoundTooSmallError(self.round_num, len(accepted), needed, dict(self.refused))
        weights = self.aggregator.aggregate()
        stopped = None if final else self.aggregator.stop_reason(self.site_metrics)
        final = final or stopped is not None
        if persistor is not None:
            persistor.save_round(weights, self.round_num)
        if state is not None:
            state.save(self.aggregator, self.round_num)
        if final and persistor is not None:
            persistor.save_final(weights)
        return RoundOutcome(
            round_num=self.round_num,
            weights=weights,
            accepted=accepted,
            refused=dict(self.refused),
            samples=dict(self.samples),
            site_metrics=dict(self.site_metrics),
            metrics={
                **weighted_metrics((self.site_metrics[s], self.samples[s]) for s in accepted),
                **self.aggregator.round_metrics(self.site_metrics),
            },
            stopped=stopped,
        )


def fold_round(
    aggregator: Aggregator,
    global_weights: StateDict,
    round_num: int,
    updates: Iterable[SiteUpdate],
    *,
    needed: int,
    persistor: Persistor | None = None,
    state: AggregatorStateStore | None = None,
    final: bool = False,
) -> RoundOutcome:
    """Run round ``round_num`` of the loop above over ``updates`` (consumed as they arrive).

    Raises RoundTooSmallError when fewer than ``needed`` updates were accepted; any other
    error (a persistor that cannot write) propagates with nothing half-persisted for the round
    beyond what the persistor's own atomic writes allow.
    """
    fold = RoundFold(aggregator, global_weights, round_num, state=state)
    for update in updates:
        fold.fold(update)
    return fold.close(needed=needed, persistor=persistor, state=state, final=final)


def _fold_one(aggregator: Aggregator, update: SiteUpdate) -> str | None:
    """Fold one update into the accumulator; the reason it was refused, or None."""
    if update.error is not None:
        return update.error
    if update.load is None or update.samples <= 0:
        return "update refused: no weights or zero samples in the upload"
    try:
        weights = update.load()
    except Exception as exc:  # noqa: BLE001 - a site's file may be broken in any way: refuse it
        return f"update refused: {exc}"
    try:
        aggregator.accept(update.site, weights, int(update.samples))
    except InvalidUpdateError as exc:
        return f"update refused: {exc}"
    return None


__all__ = [
    "AggregatorStateStore",
    "Persistor",
    "RoundFold",
    "RoundOutcome",
    "RoundTooSmallError",
    "SiteUpdate",
    "fold_round",
]
