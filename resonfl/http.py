"""One HTTP client for ResonFL's API, shared by the SDK (`resonfl.client.Client`) and the site
worker (`resonfl_server.workers.site.api.SiteAPI`): base URL, bearer token, and the retry policy.

Retry policy: a request that never got an answer (the connection was refused, reset or
dropped; the server is restarting) or that got 502/503/504 from a proxy in front is sent again
after 0.5, 1, 2, 4 ... s (capped at `max_delay_s`, plus jitter) until `budget_s` has passed.
Only requests that are safe to repeat use it: reads, and writes the server makes idempotent
(a site's state report; its result upload, which the server records once per (job, round,
site) and answers a repeat of with duplicate=true). Each attempt rebuilds the request, so a
file body is read again from its start.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

API_PREFIX = "/api/v1"
T = TypeVar("T")
log = logging.getLogger("resonfl.http")

# Errors where the request may not have reached the server, or its answer was lost.
RETRIABLE_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)
RETRIABLE_STATUS = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for requests that are safe to repeat; `budget_s=0` means one attempt only."""

    budget_s: float = 120.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delays(self) -> Iterator[float]:
        """Seconds to wait before each further attempt, until the budget is spent."""
        spent, delay = 0.0, self.first_delay_s
        while spent < self.budget_s:
            wait = min(delay, self.max_delay_s) * random.uniform(0.8, 1.2)
            wait = min(wait, self.budget_s - spent)
            spent += wait
            yield wait
            delay *= 2


NO_RETRY = RetryPolicy(budget_s=0.0)


class RetryableStatus(httpx.HTTPStatusError):
    """A 502/503/504: the server (or a proxy in front of it) is briefly away."""


class ApiClient:
    """httpx.Client on `<url>/api/v1` with a bearer token; `call` applies the retry policy."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout_s: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self.http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        send: Callable[[httpx.Client], T],
        what: str = "request",
        retry: RetryPolicy | None = None,
    ) -> T:
        """Run `send(http)` (which builds and sends the request, and may read the answer),
        again after a backoff while it fails with a connection error or 502/503/504."""
        delays = (retry or self.retry).delays()
        attempt = 1
        while True:
            try:
                return send(self.http)
            except RETRIABLE_ERRORS + (RetryableStatus,) as exc:
                wait = next(delays, None)
                if wait is None:
                    raise
                log.warning("%s: %s; attempt %d again in %.1f s", what, exc, attempt + 1, wait)
                time.sleep(wait)
                attempt += 1

    def request(
        self, method: str, path: str, retry: RetryPolicy | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request with the retry policy (this client's, or `retry`); the response is
        returned whatever its status."""

        def send(http: httpx.Client) -> httpx.Response:
            return raise_if_retryable(http.request(method, path, **kwargs))

        return self.call(send, f"{method} {path}", retry)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (no retry: the caller retries the whole download)."""
        with self.http.stream(method, path, **kwargs) as response:
            yield response


def raise_if_retryable(response: httpx.Response) -> httpx.Response:
    if response.status_code in RETRIABLE_STATUS:
        raise RetryableStatus(
            f"HTTP {response.status_code}", request=response.request, response=response
        )
    return response
