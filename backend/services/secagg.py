"""Secure aggregation's four stages through the job store (API and aggregator; no torch).

A round of a SecAgg job (`resonfl.fl.secagg`, the protocol) has a `SecAggRound` row, opened
with the round (`rounds._open_round`), and its sites' messages as `SecAggMessage` rows:

    keys     each site posts its two X25519 public keys as soon as its task starts; the stage
             closes when every site of the round has posted or failed (or at its deadline):
             `sites` = who posted, frozen
    shares   each site of `sites` fetches everyone's keys and posts its encrypted Shamir shares
             (one box per neighbour); closes the same way: `sharers`, frozen. A site that did
             not share is out of the round (its result is failed with the reason)
    masked   each sharer uploads its masked vector as the round's result (the usual upload,
             refused from anyone else); closes when the round is due by the usual rule
             (`min_clients` in, or nobody pending): `survivors` (masked vector in) and
             `dropped` (shared, no vector), frozen
    unmask   each survivor fetches both lists and posts, per neighbour, its share of the
             survivor's self-mask seed or of the dropped site's mask key; closes when every
             survivor answered (or at its deadline)
    ready    the round is due: the aggregator unmasks the sum (`transcript` is what it gets)

Every transition is a conditional UPDATE from the stage it read, so two API processes and the
aggregator's reconcile loop advance a round exactly once; each request that reads or writes a
stage first advances it (`advance`), so deadlines need no timer of their own (reconcile
advances rounds nobody asks about). The server stores public keys, ciphertexts it cannot open,
masked vectors and the unmask shares: `docs/privacy.md` says what that reveals.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resonfl_server.backend.models import (
    ResultStatus,
    SecAggMessage,
    SecAggRound,
    SecAggStage,
    SiteResult,
    utcnow,
)
from resonfl_server.backend.services.errors import Conflict, InvalidSubmission

KEYS, SHARES, UNMASK = "keys", "shares", "unmask"
ORDER = [SecAggStage.KEYS, SecAggStage.SHARES, SecAggStage.MASKED, SecAggStage.UNMASK]
MASKED_KEY = "secagg.masked"  # resonfl.fl.secagg.MASKED_KEY (the API does not import torch)
KEY_BYTES = 32  # an X25519 public key
BOX_BYTES = 12 + 2 * 66 + 16  # nonce + the two Shamir shares + the AES-GCM tag
PRIME = 2**521 - 1
MESSAGE = "secagg"  # the `file` named in a 422


# ------------------------------------------------------------------------------ rows
def open_round(
    session: Session, job_id: int, round_num: int, size: int, stage_timeout_s: float
) -> SecAggRound:
    """The stage state of a new round (added to the session; the caller commits)."""
    row = SecAggRound(
        job_id=job_id,
        round_num=round_num,
        stage=SecAggStage.KEYS,
        size=size,
        stage_timeout_s=stage_timeout_s,
        stage_deadline=utcnow() + timedelta(seconds=stage_timeout_s),
        sites=[],
        sharers=[],
        survivors=[],
        dropped=[],
    )
    session.add(row)
    return row


def state_of(session: Session, job_id: int, round_num: int) -> SecAggRound | None:
    """The round's stage state, fresh from the database; None for a round without SecAgg."""
    return session.scalar(
        select(SecAggRound)
        .where(SecAggRound.job_id == job_id, SecAggRound.round_num == round_num)
        .execution_options(populate_existing=True)
    )


def _messages(session: Session, row: SecAggRound, kind: str) -> dict[str, dict[str, Any]]:
    rows = session.scalars(
        select(SecAggMessage).where(
            SecAggMessage.job_id == row.job_id,
            SecAggMessage.round_num == row.round_num,
            SecAggMessage.kind == kind,
        )
    )
    return {m.sender: m.body for m in rows}


# ------------------------------------------------------------------------------ stages
def advance(
    session: Session,
    row: SecAggRound,
    results: list[SiteResult],
    results_due: Callable[[], bool],
    now: datetime | None = None,
) -> bool:
    """Close every stage that can close now (commits); True when this call made it ready."""
    ready = False
    while row.stage != SecAggStage.READY:
        values = _closing(session, row, results, results_due, now or utcnow())
        if values is None:
            break
        changed = session.execute(
            update(SecAggRound)
            .where(SecAggRound.id == row.id, SecAggRound.stage == row.stage)
            .values(**values)
        ).rowcount  # type: ignore[attr-defined]
        if changed and values["stage"] == SecAggStage.MASKED:
            _fail_left_out(results, set(values["sharers"]))
        session.commit()
        ready = ready or bool(changed and values["stage"] == SecAggStage.READY)
        fresh = state_of(session, row.job_id, row.round_num)
        assert fresh is not None
        row = fresh
    return ready


def _closing(
    session: Session,
    row: SecAggRound,
    results: list[SiteResult],
    results_due: Callable[[], bool],
    now: datetime,
) -> dict[str, Any] | None:
    """The values that close `row`'s stage, or None while it stays open."""
    failed = {r.site for r in results if r.status == ResultStatus.FAILED}
    late = row.stage_deadline is not None and row.stage_deadline <= now
    timeout = timedelta(seconds=row.stage_timeout_s)
    if row.stage == SecAggStage.KEYS:
        holders = set(_messages(session, row, KEYS)) & {r.site for r in results}
        if not late and not all(r.site in holders | failed for r in results):
            return None
        return {
            "stage": SecAggStage.SHARES,
            "sites": sorted(holders - failed),
            "stage_deadline": now + timeout,
        }
    if row.stage == SecAggStage.SHARES:
        sharers = set(_messages(session, row, SHARES)) & set(row.sites)
        if not late and not all(s in sharers | failed for s in row.sites):
            return None
        return {
            "stage": SecAggStage.MASKED,
            "sharers": sorted(sharers - failed),
            "stage_deadline": None,
        }
    if row.stage == SecAggStage.MASKED:
        if not results_due():
            return None
        done = {r.site for r in results if r.status == ResultStatus.DONE}
        survivors = sorted(done & set(row.sharers))
        return {
            "stage": SecAggStage.UNMASK if survivors else SecAggStage.READY,
            "survivors": survivors,
            "dropped": sorted(set(row.sharers) - done),
            "stage_deadline": now + timeout,
        }
    if row.stage == SecAggStage.UNMASK:
        answered = set(_messages(session, row, UNMASK))
        if not late and not set(row.survivors) <= answered:
            return None
        return {"stage": SecAggStage.READY, "stage_deadline": None}
    return None


def _fail_left_out(results: list[SiteResult], sharers: set[str]) -> None:
    """A site that did not share in time cannot take part in the round's sum: its result is
    failed now (its upload would be refused), so the round does not wait for it."""
    for res in results:
        if res.site not in sharers and res.status not in (ResultStatus.DONE, ResultStatus.FAILED):
            res.status = ResultStatus.FAILED
            res.error = (
                "left out of the round's secure aggregation: its keys or shares did not "
                "arrive before the stage closed"
            )


# ------------------------------------------------------------------------------ messages
def post(
    session: Session, row: SecAggRound, result: SiteResult, kind: str, body: dict[str, Any]
) -> bool:
    """Store `result.site`'s message of stage `kind`; False when the same one was in already.

    Keys may be replaced while the key stage is open (a worker that restarted lost its
    secrets, and nobody used its old keys yet); shares and answers are given once."""
    site = result.site
    expected = {KEYS: SecAggStage.KEYS, SHARES: SecAggStage.SHARES, UNMASK: SecAggStage.UNMASK}
    if row.stage != expected[kind]:
        raise Conflict(
            f"job {row.job_id} round {row.round_num}: secure aggregation is in stage "
            f"{row.stage.value!r}; {kind} are taken in stage {expected[kind].value!r}"
        )
    if result.status == ResultStatus.FAILED:
        raise Conflict(f"site {site!r} has failed round {row.round_num}; its {kind} are not taken")
    if kind == SHARES and site not in row.sites:
        raise Conflict(f"site {site!r} is not among the key exchange's sites {row.sites}")
    if kind == UNMASK and site not in row.survivors:
        raise Conflict(f"site {site!r} is not among the round's survivors {row.survivors}")
    clean = _validated(row, site, kind, body)
    existing = session.scalar(
        select(SecAggMessage).where(
            SecAggMessage.job_id == row.job_id,
            SecAggMessage.round_num == row.round_num,
            SecAggMessage.kind == kind,
            SecAggMessage.sender == site,
        )
    )
    if existing is not None:
        if existing.body == clean:
            return False
        if kind != KEYS:
            raise Conflict(f"site {site!r} already sent different {kind} for round {row.round_num}")
        existing.body = clean
        session.commit()
        return True
    session.add(
        SecAggMessage(
            job_id=row.job_id, round_num=row.round_num, kind=kind, sender=site, body=clean
        )
    )
    try:
        session.commit()
    except IntegrityError:  # the same site's concurrent retry won
        session.rollback()
        return False
    return True


def _validated(row: SecAggRound, site: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    if kind == KEYS:
        return {name: _b64(body.get(name), f"{name}", KEY_BYTES) for name in ("c", "s")}
    if kind == SHARES:
        boxes = body.get("boxes")
        if not isinstance(boxes, dict) or not boxes:
            raise InvalidSubmission(MESSAGE, "boxes", "an object: neighbour -> encrypted shares")
        strangers = sorted(set(boxes) - (set(row.sites) - {site}))
        if strangers:
            raise InvalidSubmission(
                MESSAGE, "boxes", f"{strangers[:5]} are not other sites of the key exchange"
            )
        return {"boxes": {p: _b64(b, f"boxes.{p}", BOX_BYTES) for p, b in sorted(boxes.items())}}
    shares = body.get("shares")
    if not isinstance(shares, dict):
        raise InvalidSubmission(MESSAGE, "shares", "an object: peer -> share (decimal string)")
    strangers = sorted(set(shares) - set(row.sites))
    if strangers:
        raise InvalidSubmission(MESSAGE, "shares", f"{strangers[:5]} are not sites of the round")
    out = {}
    for peer, value in sorted(shares.items()):
        if not isinstance(value, str) or not value.isdigit() or len(value) > 160:
            raise InvalidSubmission(MESSAGE, f"shares.{peer}", "a decimal string")
        if int(value) >= PRIME:
            raise InvalidSubmission(MESSAGE, f"shares.{peer}", "not a share (>= the field's prime)")
        out[peer] = value
    return {"shares": out}


def _b64(value: object, field: str, size: int) -> str:
    if not isinstance(value, str) or len(value) > 4 * size:
        raise InvalidSubmission(MESSAGE, field, f"base64 of {size} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSubmission(MESSAGE, field, "not base64") from None
    if len(raw) != size:
        raise InvalidSubmission(MESSAGE, field, f"{len(raw)} bytes, {size} expected")
    return value


# ------------------------------------------------------------------------------ views
def view(session: Session, row: SecAggRound, site: str) -> dict[str, Any]:
    """What `site` may read of the round now: the stage, and each closed stage's outcome
    (everyone's public keys; the shares addressed to this site; survivors and dropped)."""
    at = ORDER.index(row.stage) if row.stage in ORDER else len(ORDER)
    out: dict[str, Any] = {
        "job_id": row.job_id,
        "round": row.round_num,
        "stage": row.stage.value,
        "stage_deadline": row.stage_deadline.isoformat() if row.stage_deadline else None,
        "size": row.size,
    }
    if at >= 1:
        keys = _messages(session, row, KEYS)
        out["sites"] = list(row.sites)
        out["keys"] = {s: keys[s] for s in row.sites if s in keys}
    if at >= 2:
        out["sharers"] = list(row.sharers)
        shares = _messages(session, row, SHARES)
        out["inbox"] = {
            sender: shares[sender]["boxes"][site]
            for sender in row.sharers
            if sender in shares and site in shares[sender]["boxes"]
        }
    if at >= 3:
        out["survivors"] = list(row.survivors)
        out["dropped"] = list(row.dropped)
    return out


def transcript(session: Session, row: SecAggRound) -> dict[str, Any]:
    """What the aggregator unmasks with (`resonfl.fl.secagg.Transcript`'s fields, decoded)."""
    keys = _messages(session, row, KEYS)
    answers = _messages(session, row, UNMASK)
    return {
        "sites": tuple(row.sites),
        "keys": {
            s: (base64.b64decode(keys[s]["c"]), base64.b64decode(keys[s]["s"]))
            for s in row.sites
            if s in keys
        },
        "sharers": frozenset(row.sharers),
        "survivors": tuple(row.survivors),
        "dropped": tuple(row.dropped),
        "answers": {
            s: {peer: int(v) for peer, v in answers[s]["shares"].items()}
            for s in row.survivors
            if s in answers
        },
    }


# ------------------------------------------------------------------------------ uploads
def check_upload(row: SecAggRound, site: str, path: Path) -> None:
    """A masked upload is taken in stage `masked`, from a sharer, as one uint64 tensor of the
    round's vector size; anything else would make the sum impossible to unmask."""
    if row.stage != SecAggStage.MASKED:
        raise Conflict(
            f"job {row.job_id} round {row.round_num}: secure aggregation is in stage "
            f"{row.stage.value!r}; masked uploads are taken in stage 'masked'"
        )
    if site not in row.sharers:
        raise Conflict(
            f"site {site!r} did not share its keys in round {row.round_num}: it is not part "
            "of the round's secure aggregation"
        )
    header = _safetensors_header(path)
    entry = header.get(MASKED_KEY) if header is not None else None
    keys = sorted(k for k in (header or {}) if k != "__metadata__")
    if not isinstance(entry, dict) or keys != [MASKED_KEY]:
        raise InvalidSubmission(
            "weights", "", f"a secure-aggregation upload holds one tensor {MASKED_KEY!r}"
        )
    if entry.get("dtype") != "U64" or entry.get("shape") != [row.size]:
        raise InvalidSubmission(
            "weights",
            MASKED_KEY,
            f"uint64 of shape [{row.size}] expected, got {entry.get('dtype')} {entry.get('shape')}",
        )


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > 1 << 20:
            return None
        try:
            parsed = json.loads(fh.read(length))
        except ValueError:
            return None
    return parsed if isinstance(parsed, dict) else None


def vector_size(weights: Path) -> int:
    """Length of each site's masked vector for these global weights (every floating-point
    value, plus one for the samples count): `resonfl.fl.secagg.vector_size`, from the header."""
    header = _safetensors_header(weights) or {}
    floats = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
    return 1 + sum(
        math.prod(entry["shape"])
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and entry.get("dtype") in floats
    )
