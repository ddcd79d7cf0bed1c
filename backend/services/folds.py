"""Rounds being folded in the aggregator process, one update at a time, as each arrives.

Life of a round's running fold (aggregator process only; the API never imports torch):

    fold_arrived   a site's update is in (`rounds.fold_arrived`, task `fold`): open the round's fold on its first
                   update (aggregator state restored, global weights loaded), fold this one
    take           the round is claimed for aggregation (`rounds.aggregate_round`): the fold
                   is closed to later messages and handed over; the aggregation folds the
                   done results it has not seen yet, then aggregates and persists

So the fold hides behind the slowest site and aggregation is left with one update's fold.
The running fold is a cache, never the truth: the aggregation folds exactly the results the
job store has as done when it claims the round, a site seen before is not folded again (a
redelivered `fold` message changes nothing), and a process that dies (SIGKILL) loses only the
cache: whoever takes the round over folds every update from the store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resonfl.fl.rounds import RoundFold

# Running folds kept at once (one per running round). Each holds the round's global weights
# and a float64 accumulator, about 3x the model (ResNet-50: ~280 MB), for the whole round, so
# the count is bounded; the oldest is dropped and its round folded at aggregation as before.
MAX_OPEN = 4
MAX_CLOSED = 256  # rounds remembered as taken, so a late message never reopens one


@dataclass
class RunningFold:
    """A round's fold in progress: which global weights it started from, and its lock."""

    weights_key: str
    fold: RoundFold | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    opened_at: float = field(default_factory=time.monotonic)
    closed: bool = False


class FoldRegistry:
    """The running folds of this process, by (job, round); thread-safe (the aggregator's
    Celery pool runs tasks in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[int, int], RunningFold] = OrderedDict()
        self._closed: OrderedDict[tuple[int, int], None] = OrderedDict()

    def entry(self, job_id: int, round_num: int, weights_key: str) -> RunningFold | None:
        """The round's running fold (created empty if new); None once the round was taken."""
        key = (job_id, round_num)
        with self._lock:
            if key in self._closed:
                return None
            entry = self._open.get(key)
            if entry is not None and entry.weights_key == weights_key:
                return entry
            # a new round of this job: folds of its other rounds can never be taken any more
            for other in [k for k in self._open if k[0] == job_id]:
                del self._open[other]
            entry = self._open[key] = RunningFold(weights_key)
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
            return entry

    def take(self, job_id: int, round_num: int) -> RunningFold | None:
        """Close the round to later messages and hand its running fold over (None if none)."""
        key = (job_id, round_num)
        with self._lock:
            self._closed[key] = None
            while len(self._closed) > MAX_CLOSED:
                self._closed.popitem(last=False)
            entry = self._open.pop(key, None)
        if entry is None:
            return None
        with entry.lock:  # waits for a fold in progress on another thread
            entry.closed = True
        return entry

    def drop_job(self, job_id: int) -> None:
        with self._lock:
            for key in [k for k in self._open if k[0] == job_id]:
                del self._open[key]

    def __len__(self) -> int:
        return len(self._open)


REGISTRY = FoldRegistry()
