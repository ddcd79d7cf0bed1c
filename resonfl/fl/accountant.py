"""Privacy accounting: epsilon for a delta after repeated sampled-Gaussian steps (RDP).

One place computes every epsilon the platform reports, on the server (DP-FedAvg: one step per
round, sites sampled at rate q) and, through the same opacus functions, on the sites (DP-SGD:
one step per batch, samples drawn by Poisson sampling at q = batch / samples). It is opacus's
RDP accountant (Mironov 2017; Mironov, Talwar, Zhang 2019) with the orders extended past
opacus's default 63, so a low-noise run does not sit at the largest order:

    rdp  = sum over history of steps x compute_rdp(q, sigma, 1, ORDERS)
    eps  = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)

``history`` is a list of ``(noise_multiplier, sample_rate, steps)``, as opacus keeps it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

# opacus's DEFAULT_ALPHAS, then higher orders for low noise (sigma < ~0.7)
ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *map(float, range(12, 64)),
    80.0,
    100.0,
    128.0,
    192.0,
    256.0,
    512.0,
    1024.0,
)

History = list[tuple[float, float, int]]


def epsilon(history: Iterable[tuple[float, float, int]], delta: float) -> float:
    """Epsilon after every ``(noise_multiplier, sample_rate, steps)`` in ``history``.

    0 for an empty history; infinity when any step had no noise.
    """
    # opacus is imported here, not at the top: its package import pulls in its whole training
    # stack, and the API process (which lists aggregators) never computes an epsilon
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent  # lazy: heavy

    total = None
    for sigma, q, steps in history:
        if steps <= 0:
            continue
        if sigma <= 0:
            return math.inf
        rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(ORDERS))
        total = rdp if total is None else total + rdp
    if total is None:
        return 0.0
    with warnings.catch_warnings():  # "optimal order is the largest alpha": eps is still valid
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=total, delta=delta)
    return float(eps)


def noise_for_target(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 0.01 in epsilon) whose ``steps`` stay within target."""
    lo, hi = 0.0, 10.0
    while epsilon([(hi, sample_rate, steps)], delta) > target_epsilon:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"no noise multiplier reaches epsilon {target_epsilon}")
    while hi - lo > 1e-4 * max(hi, 1e-3):
        mid = (lo + hi) / 2
        if epsilon([(mid, sample_rate, steps)], delta) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


__all__ = ["ORDERS", "History", "epsilon", "noise_for_target"]
