"""This site's side of a secure-aggregation round (`resonfl.fl.secagg`, `services/secagg.py`).

    start    post this site's public keys as the round's task starts, then, in a thread
             while the job process trains: wait for the key exchange to close, post the
             encrypted shares for each neighbour
    mask     once training is done and the share stage closed: read the shares addressed to
             this site, encode ``samples x (weights - global)`` on the ring and add the masks;
             that masked vector is what gets uploaded, never the weights
    unmask   once the uploads are in: answer, per neighbour, with the share the server may
             have (of a survivor's self-mask seed, or of a dropped site's mask key), once

The secrets (two X25519 private keys, the self-mask seed) live in this worker process only,
never in the job's sandboxed process nor on disk: a worker that dies mid-round takes them
along, and the others recover the round without it from its shares.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resonfl.job import Job
from resonfl_server.workers.site.api import SiteAPI

log = logging.getLogger("resonfl.site")

POLL_S = 0.2


class SecureRoundError(RuntimeError):
    """This site cannot take part in the round's secure aggregation (the message says why)."""


def secure_args(job: Job) -> Any | None:
    """The job's SecAgg args when its aggregator aggregates securely, else None."""
    from resonfl.fl.base import Aggregator, resolve_class  # lazy: torch

    fed = job.federation
    cls: type[Aggregator] = resolve_class(fed.aggregator_path, Aggregator)
    if not getattr(cls, "secure_aggregation", False):
        return None
    return cls.Args.model_validate(fed.aggregator_args)


class SecureRound:
    """One site's four stages of one round (see the module's docstring)."""

    def __init__(
        self, api: SiteAPI, site: str, job_id: int, round_num: int, args: Any, timeout_s: float
    ) -> None:
        from resonfl.fl.secagg import Params, SecAggClient  # lazy: torch

        self.api, self.site, self.job_id, self.round_num, self.args = (
            api, site, job_id, round_num, args,
        )  # fmt: skip
        self.client = SecAggClient(site, Params(round_num, (), 0, args))
        self.deadline = time.monotonic() + timeout_s
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- stage 1 and 2 (while the job process trains)
    def start(self) -> None:
        c, s = self.client.public_keys()
        body = {"c": _b64(c), "s": _b64(s)}
        self.api.secagg_post(self.job_id, self.round_num, "keys", body)
        self._thread = threading.Thread(
            target=self._share, name=f"secagg-{self.job_id}-{self.round_num}", daemon=True
        )
        self._thread.start()

    def _share(self) -> None:
        from resonfl.fl.secagg import Params  # lazy: torch

        try:
            view = self._wait(lambda v: v["stage"] != "keys", "the key exchange")
            params = Params(self.round_num, tuple(view["sites"]), int(view["size"]), self.args)
            self.client.join(params)  # raises when this site's keys came too late
            keys = {s: (_unb64(k["c"]), _unb64(k["s"])) for s, k in view["keys"].items()}
            boxes = self.client.encrypted_shares(keys)
            body = {"boxes": {peer: _b64(box) for peer, box in boxes.items()}}
            self.api.secagg_post(self.job_id, self.round_num, "shares", body)
        except BaseException as exc:  # noqa: BLE001 - re-raised by mask() in the round's thread
            self._error = exc

    def stop(self) -> None:
        """The round failed or was left: the sharing thread gives up at its next poll."""
        self._stop.set()

    # -- stage 3
    def mask(self, global_path: Path, weights_path: Path, samples: int, out: Path) -> Path:
        """The masked vector of this site's update, written to `out` (safetensors)."""
        import torch  # lazy: torch
        from safetensors.torch import save_file

        from resonfl.fl.secagg import MASKED_KEY, encode
        from resonfl.fl.shareable import load_weights

        if self._thread is not None:
            self._thread.join(max(self.deadline - time.monotonic(), 0.0))
        if self._error is not None:
            raise SecureRoundError(f"secure aggregation: {self._error}") from self._error
        view = self._wait(lambda v: v["stage"] not in ("keys", "shares"), "the share stage")
        if self.site not in view.get("sharers", []):
            raise SecureRoundError(
                f"secure aggregation: {self.site} is not among the round's sharers "
                f"{view.get('sharers')}: its shares came too late"
            )
        inbox = {sender: _unb64(box) for sender, box in view["inbox"].items()}
        vector = encode(load_weights(global_path), load_weights(weights_path), samples, self.args)
        masked = self.client.masked_update(vector, inbox)
        save_file({MASKED_KEY: torch.from_numpy(masked)}, str(out))
        return out

    # -- stage 4
    def unmask(self) -> str:
        """Answer the unmask request once the uploads are in; what happened, for the log."""
        view = self._wait(lambda v: v["stage"] in ("unmask", "ready"), "the other uploads")
        if view["stage"] == "ready" or self.site not in view.get("survivors", []):
            return f"secure aggregation: not asked to unmask (stage {view['stage']})"
        answers = self.client.unmask_shares(view["survivors"], view["dropped"])
        body = {"shares": {peer: str(value) for peer, value in answers.items()}}
        self.api.secagg_post(self.job_id, self.round_num, "unmask", body)
        return (
            f"secure aggregation: unmasked with {len(view['survivors'])} survivor(s), "
            f"{len(view['dropped'])} dropped"
        )

    def _wait(self, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        while True:
            view = self.api.secagg(self.job_id, self.round_num)
            if ready(view):
                return view
            if view["job_status"] != "running" or view["round_status"] != "running":
                raise SecureRoundError(
                    f"secure aggregation: job {self.job_id} is {view['job_status']}, round "
                    f"{self.round_num} {view['round_status']} while waiting for {what}"
                )
            if view["result_status"] == "failed":
                raise SecureRoundError(
                    f"secure aggregation: this site's part in round {self.round_num} failed "
                    f"while waiting for {what}"
                )
            if self._stop.is_set():
                raise SecureRoundError("secure aggregation: the round was left")
            if time.monotonic() > self.deadline:
                raise SecureRoundError(f"secure aggregation: timed out waiting for {what}")
            time.sleep(POLL_S)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
