"""Secure aggregation, SecAgg+ style: the server learns the sum of the updates, not one of them.

Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
with the neighbour graph of Bell et al. 2020 (SecAgg+), as Flower's ``secaggplus`` runs it.
One round, four stages (each message goes through the server, which only routes it):

    1 keys     each site makes two X25519 key pairs: c (to encrypt shares) and s (for masks);
               the server publishes every site's public keys
    2 shares   each site draws a self-mask seed b, splits b and its mask key s_sk into Shamir
               shares (threshold t) for its neighbours and encrypts each neighbour's pair
               with AES-GCM under HKDF(X25519(c_i, c_j)); the server forwards the ciphertexts
    3 masked   each site quantizes ``n x (weights - global)`` to the ring Z_2^64 (fixed point,
               values clipped to +-clip_range) and adds PRG(b) and, per neighbour j,
               +-PRG(HKDF(X25519(s_i, s_j))): + when i < j, - otherwise, so pairs cancel
    4 unmask   the server names who sent a masked vector (survivors) and who did not
               (dropped); each survivor returns, per neighbour, the share of b (survivor) or of
               s_sk (dropped), never both. With t shares the server rebuilds each survivor's b
               and each dropped site's s_sk, removes their masks, and is left with
               sum n_k q(delta_k) and sum n_k: FedAvg of the survivors' updates.

The PRG is ChaCha20 (a stream cipher keyed by the 32-byte seed); Shamir sharing is over the
Mersenne prime 2^521 - 1. A masked vector is uniform on Z_2^64 to whoever lacks the seeds:
it looks like noise. The server learns the sum of the survivors' weighted updates and the
sum of their sample counts, who survived, and nothing about one site's update as long as
fewer than t of its neighbours collude with it (honest-but-curious server; a malicious server
that lies about who dropped is stopped by each site refusing to reveal both shares of one
peer). Quantization error per weight: at most clip_range / (2^bits - 1) (rounding to the
nearest step), and values beyond +-clip_range are clipped.

What runs where: this module is the protocol, pure (no transport).
* On the platform each site worker runs its own `SecAggClient` (`workers/site/secagg.py`)
  and masks its update before the upload; the API carries the four stages and keeps each
  round's stage state (`backend/services/secagg.py`); the aggregator folds masked vectors
  only and unmasks their sum from the stage-4 answers (`SecAggFedAvg` in masked mode, given
  the round's `Transcript`).
* In one process (`resonfl.catalog.inprocess`, the simulator) `SecAggFedAvg` runs
  `SecureRound`: each site's `SecAggClient` object holds its own secrets and the
  `SecAggServer` object sees only public keys, ciphertexts, masked vectors and shares, but
  the plaintext updates passed through the loop's process first (the math, not the guarantee).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.base import (
    Aggregator,
    DuplicateUpdateError,
    FLError,
    InvalidUpdateError,
    NoUpdatesError,
    RoundClosedError,
    StateDict,
)
from resonfl.fl.fedavg import cast_like

PRIME = 2**521 - 1  # Shamir's field: a Mersenne prime above any 32-byte secret
RING = 2**64  # masked values live in Z_2^64 (numpy uint64 arithmetic wraps exactly there)
MASKED_KEY = "secagg.masked"  # the one tensor of a masked upload (safetensors, uint64)
SHARE_BYTES = 66  # a Shamir share (below 2^521) as big-endian bytes


class SecAggError(FLError, RuntimeError):
    """The protocol cannot go on (too few shares, a stage out of order, a lying server)."""


# ----------------------------------------------------------------------------- primitives
def prg(seed: bytes, size: int) -> np.ndarray:
    """``size`` uint64 values from ChaCha20 keyed by the 32-byte ``seed`` (a mask)."""
    out = np.zeros(size, dtype=np.uint64)
    add_masks(out, [(seed, 1)])
    return out


CHUNK = 1 << 17  # values per step of `add_masks` (1 MiB of keystream: stays in cache)


def add_masks(target: np.ndarray, masks: Sequence[tuple[bytes, int]]) -> None:
    """``target += sign x prg(seed)`` for every ``(seed, sign)``, in place on Z_2^64: one
    chunk of every stream at a time, never a whole mask in memory (a ResNet-18 mask is 90 MB;
    the keystream is the same bytes as one long call)."""
    streams = [
        (Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor(), sign)
        for seed, sign in masks
    ]
    zeros = bytes(8 * min(CHUNK, target.size))
    for start in range(0, target.size, CHUNK):
        part = target[start : start + CHUNK]
        for stream, sign in streams:
            mask = np.frombuffer(stream.update(zeros[: 8 * part.size]), dtype=np.uint64)
            if sign > 0:
                part += mask
            else:
                part -= mask


def _kdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _agree(private: X25519PrivateKey | bytes, public: bytes) -> bytes:
    if isinstance(private, bytes):
        private = X25519PrivateKey.from_private_bytes(private)
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def split_secret(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Shamir shares of ``secret`` at points ``xs`` (any ``threshold`` of them rebuild it)."""
    value = int.from_bytes(secret, "big")
    coefficients = [value] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: sum(c * pow(x, k, PRIME) for k, c in enumerate(coefficients)) % PRIME for x in xs}


def join_secret(shares: Mapping[int, int], threshold: int, length: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares, {threshold} needed to rebuild a secret")
    points = list(shares.items())[:threshold]
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, PRIME - 2, PRIME)) % PRIME
    return total.to_bytes(length, "big")


def quantize(values: np.ndarray, clip_range: float, bits: int) -> np.ndarray:
    """Fixed point: [-clip, clip] onto the integers 0 .. 2^bits - 1 (nearest step), uint64.
    A float64 ``values`` is used as scratch (the callers' own buffer: no copy of a model)."""
    steps = 2**bits - 1
    work = values if values.dtype == np.float64 else values.astype(np.float64)
    np.clip(work, -clip_range, clip_range, out=work)
    work += clip_range
    work *= steps / (2 * clip_range)
    np.rint(work, out=work)
    return work.astype(np.int64).view(
        np.uint64
    )  # exact (0 .. 2^bits); numpy's uint64 cast is 30x slower


def dequantize_mean(total: np.ndarray, weight: int, clip_range: float, bits: int) -> np.ndarray:
    """Inverse of `quantize` for ``total = sum_k w_k q_k`` with ``weight = sum_k w_k``."""
    steps = 2**bits - 1
    return total.astype(np.float64) / weight / steps * (2 * clip_range) - clip_range


# ----------------------------------------------------------------------------- settings
class SecAggArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clip_range: float = Field(
        default=1.0,
        gt=0,
        description="each weight's round update (weights - global) is clipped to +- this before "
        "quantization",
    )
    quantization_bits: int = Field(
        default=24,
        ge=8,
        le=32,
        description="fixed-point steps per value: 2^bits - 1 over [-clip_range, clip_range]",
    )
    max_samples: int = Field(
        default=2**20,
        ge=1,
        le=2**24,
        description="largest samples count a site may weigh its update with (the ring must "
        "hold the weighted sum)",
    )
    threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of a site's neighbours whose shares rebuild its secrets (t = "
        "floor(share x neighbours) + 1); the server learns nothing from fewer",
    )
    neighbours: int | None = Field(
        default=None,
        ge=2,
        description="SecAgg+: how many other sites each site masks with (rounded up to even); "
        "blank = all (SecAgg). A dropout is recovered while more than threshold x neighbours of "
        "each site survive",
    )
    stage_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="on the platform: how long the server waits for the sites' keys, shares "
        "and unmask answers of a stage before it goes on without the silent ones",
    )

    def check_sites(self, sites: list[str]) -> None:
        if len(sites) < 3:
            raise ValueError(
                "secure aggregation needs at least 3 sites: with 2, each site could subtract "
                "its own update from the sum and read the other's"
            )
        bits_needed = self.quantization_bits + math.ceil(math.log2(self.max_samples))
        bits_needed += math.ceil(math.log2(len(sites) + 1))
        if bits_needed > 64:
            raise ValueError(f"quantization_bits + log2(max_samples x sites) = {bits_needed} > 64")


@dataclass(frozen=True)
class Params:
    """What every party of one round agrees on (the server publishes it)."""

    round_num: int
    sites: tuple[str, ...]
    size: int  # length of the vector each site masks (its weights + 1 for its samples count)
    args: SecAggArgs

    def neighbours(self, site: str) -> list[str]:
        """SecAgg+'s graph: the k nearest sites on a ring in a round-seeded order."""
        k = self.args.neighbours
        if k is None or k >= len(self.sites) - 1:
            return [s for s in self.sites if s != site]
        digest = lambda s: hashlib.sha256(f"{self.round_num}:{s}".encode()).digest()  # noqa: E731
        ring = sorted(self.sites, key=digest)
        i = ring.index(site)
        half = (k + 1) // 2
        near = {ring[(i + d) % len(ring)] for d in range(-half, half + 1) if d}
        return sorted(near)

    def threshold(self, site: str) -> int:
        return math.floor(self.args.threshold * len(self.neighbours(site))) + 1

    def x(self, site: str) -> int:
        """A site's Shamir evaluation point."""
        return self.sites.index(site) + 1

    def info(self, a: str, b: str) -> bytes:
        return f"resonfl-secagg:{self.round_num}:{min(a, b)}:{max(a, b)}".encode()


# ----------------------------------------------------------------------------- the parties
@dataclass
class SecAggClient:
    """One site's side of a round; its secrets never leave this object unencrypted."""

    site: str
    params: Params
    _c: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    _s: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    _b: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _keys: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    _inbox: dict[str, bytes] = field(default_factory=dict)
    _answered: bool = False

    def public_keys(self) -> tuple[bytes, bytes]:
        """Stage 1: (c public key, s public key)."""
        return _public_bytes(self._c), _public_bytes(self._s)

    def join(self, params: Params) -> None:
        """The key exchange closed: ``params.sites`` are the sites whose keys the server
        took (on the platform the keys go out before anyone knows who will make it)."""
        if self.site not in params.sites:
            raise SecAggError(
                f"{self.site}: not among the sites of round {params.round_num}'s key exchange "
                f"{list(params.sites)} (its keys came too late): it sits this round out"
            )
        self.params = params

    def encrypted_shares(self, keys: Mapping[str, tuple[bytes, bytes]]) -> dict[str, bytes]:
        """Stage 2: shares of b and s_sk for each neighbour, each encrypted for it alone."""
        self._keys = dict(keys)
        peers = self.params.neighbours(self.site)
        missing = [p for p in peers if p not in keys]
        if missing:
            raise SecAggError(f"{self.site}: no public keys from neighbours {missing}")
        t = self.params.threshold(self.site)
        xs = [self.params.x(p) for p in peers]
        b_shares = split_secret(self._b, xs, t)
        s_shares = split_secret(_private_bytes(self._s), xs, t)
        out = {}
        for peer in peers:
            x = self.params.x(peer)
            plain = b_shares[x].to_bytes(SHARE_BYTES, "big") + s_shares[x].to_bytes(
                SHARE_BYTES, "big"
            )
            out[peer] = self._seal(peer, plain)
        return out

    def masked_update(self, vector: np.ndarray, inbox: Mapping[str, bytes]) -> np.ndarray:
        """Stage 3: the quantized, weighted vector plus its masks, on Z_2^64. Pair masks only
        with the neighbours whose shares arrived (``inbox``): a neighbour that never shared
        could not be unmasked if it dropped, so it is left out of this site's masks (the
        server drops it from the round likewise)."""
        self._inbox = dict(inbox)
        masked = vector.astype(np.uint64, copy=True)
        masks = [(self._b, 1)]
        for peer in self.params.neighbours(self.site):
            if peer not in self._inbox:
                continue
            seed = _kdf(_agree(self._s, self._keys[peer][1]), self.params.info(self.site, peer))
            masks.append((seed, 1 if self.site < peer else -1))
        add_masks(masked, masks)
        return masked

    def unmask_shares(self, survivors: Sequence[str], dropped: Sequence[str]) -> dict[str, int]:
        """Stage 4: per neighbour, its share of b (survivor) or of s_sk (dropped), never both."""
        if self._answered:
            raise SecAggError(f"{self.site}: already answered the unmask request of this round")
        if set(survivors) & set(dropped):
            raise SecAggError(f"{self.site}: a site cannot be both survivor and dropped")
        if self.site not in survivors:
            raise SecAggError(f"{self.site}: the server says this site dropped; not answering")
        self._answered = True
        out = {}
        for peer in self.params.neighbours(self.site):
            if peer not in self._inbox:
                continue
            plain = self._open(peer, self._inbox[peer])
            b_share, s_share = plain[:SHARE_BYTES], plain[SHARE_BYTES:]
            if peer in survivors:
                out[peer] = int.from_bytes(b_share, "big")
            elif peer in dropped:
                out[peer] = int.from_bytes(s_share, "big")
        return out

    def _aead(self, peer: str) -> AESGCM:
        shared = _agree(self._c, self._keys[peer][0])
        return AESGCM(_kdf(shared, b"shares:" + self.params.info(self.site, peer)))

    def _seal(self, peer: str, plain: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        aad = f"{self.site}->{peer}".encode()
        return nonce + self._aead(peer).encrypt(nonce, plain, aad)

    def _open(self, peer: str, sealed: bytes) -> bytes:
        aad = f"{peer}->{self.site}".encode()
        return self._aead(peer).decrypt(sealed[:12], sealed[12:], aad)


@dataclass
class SecAggServer:
    """The server's side: routes messages and, at the end, removes the masks from the sum."""

    params: Params
    keys: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    mail: dict[str, dict[str, bytes]] = field(default_factory=dict)  # recipient -> sender -> box
    masked: dict[str, np.ndarray] = field(default_factory=dict)
    sharers: frozenset[str] | None = None  # who shared (the platform's record); else from mail

    def add_keys(self, site: str, keys: tuple[bytes, bytes]) -> None:
        self.keys[site] = keys

    def add_shares(self, sender: str, boxes: Mapping[str, bytes]) -> None:
        for recipient, box in boxes.items():
            self.mail.setdefault(recipient, {})[sender] = box

    def inbox(self, site: str) -> dict[str, bytes]:
        return dict(self.mail.get(site, {}))

    def add_masked(self, site: str, vector: np.ndarray) -> None:
        if vector.dtype != np.uint64 or vector.shape != (self.params.size,):
            raise SecAggError(f"{site}: a masked vector must be uint64 of size {self.params.size}")
        self.masked[site] = vector

    def survivors_and_dropped(self) -> tuple[list[str], list[str]]:
        """Sites whose masked vector is in, and sites that shared keys but sent none."""
        survivors = sorted(self.masked)
        dropped = sorted(s for s in self.keys if s not in self.masked and s in self._sharers())
        return survivors, dropped

    def _sharers(self) -> set[str]:
        if self.sharers is not None:
            return set(self.sharers)
        return {sender for boxes in self.mail.values() for sender in boxes}

    def unmasked_sum(self, answers: Mapping[str, Mapping[str, int]]) -> np.ndarray:
        """The sum of the survivors' unmasked vectors, from their stage-4 answers."""
        survivors, dropped = self.survivors_and_dropped()
        if not survivors:
            raise SecAggError("no masked vector arrived")
        total = np.zeros(self.params.size, dtype=np.uint64)
        for site in survivors:
            total += self.masked[site]
        masks: list[tuple[bytes, int]] = []
        for site in survivors:  # remove each survivor's self mask: rebuild b from shares
            shares = self._shares_of(site, answers)
            masks.append((join_secret(shares, self.params.threshold(site)), -1))
        for site in dropped:  # remove a dropped site's pair masks from its surviving neighbours
            shares = self._shares_of(site, answers)
            s_sk = join_secret(shares, self.params.threshold(site))
            for peer in self.params.neighbours(site):
                if peer not in survivors:
                    continue
                seed = _kdf(_agree(s_sk, self.keys[peer][1]), self.params.info(site, peer))
                # the survivor added +mask when its name sorts first
                masks.append((seed, -1 if peer < site else 1))
        add_masks(total, masks)
        return total

    def _shares_of(self, site: str, answers: Mapping[str, Mapping[str, int]]) -> dict[int, int]:
        return {self.params.x(peer): a[site] for peer, a in answers.items() if site in a}


# ----------------------------------------------------------------------------- one round
def encode(
    global_weights: StateDict, weights: StateDict, samples: int, args: SecAggArgs
) -> np.ndarray:
    """What a site masks: samples x q(weights - global) over the float keys, then samples."""
    if not 0 < samples <= args.max_samples:
        raise SecAggError(f"samples must be in 1..{args.max_samples} (max_samples), got {samples}")
    floats = [(k, g) for k, g in global_weights.items() if g.is_floating_point()]
    delta = np.empty(sum(g.numel() for _, g in floats) + 1, dtype=np.float64)
    offset = 0
    for key, g in floats:  # weights - global, in float64, straight into one buffer
        n = g.numel()
        w = weights[key].detach()
        if w.dtype in (torch.float32, torch.float64) and g.dtype == w.dtype:
            np.subtract(
                w.reshape(-1).numpy(), g.reshape(-1).numpy(), out=delta[offset : offset + n]
            )
        else:  # float16 / bfloat16: numpy has no bfloat16
            delta[offset : offset + n] = (
                (w.to(torch.float64) - g.to(torch.float64)).reshape(-1).numpy()
            )
        offset += n
    q = quantize(delta[:-1], args.clip_range, args.quantization_bits)
    q *= np.uint64(samples)
    return np.concatenate([q, np.array([samples], dtype=np.uint64)])


def decode(global_weights: StateDict, total: np.ndarray, args: SecAggArgs) -> StateDict:
    """The new global weights from the unmasked sum (integer buffers keep the global's)."""
    weight = int(total[-1])
    if weight <= 0:
        raise NoUpdatesError("the unmasked sum carries no samples")
    mean = dequantize_mean(total[:-1], weight, args.clip_range, args.quantization_bits)
    out: StateDict = {}
    offset = 0
    for key, g in global_weights.items():
        if not g.is_floating_point():
            out[key] = g.clone()
            continue
        n = g.numel()
        delta = torch.from_numpy(mean[offset : offset + n].copy()).reshape(g.shape)
        out[key] = cast_like(g.to(torch.float64) + delta, g.dtype)
        offset += n
    return out


def vector_size(global_weights: StateDict) -> int:
    return sum(t.numel() for t in global_weights.values() if t.is_floating_point()) + 1


@dataclass
class SecureRound:
    """Runs the four stages among `SecAggClient`s and one `SecAggServer` in one process.

    ``drop_after_sharing`` names sites that go silent after stage 2 (their shares are out,
    their masked vector never comes): the round must still complete. The transcript keeps
    what the server saw (``server.masked``: the stored per-site uploads).
    """

    params: Params
    clients: dict[str, SecAggClient]
    server: SecAggServer

    @classmethod
    def open(cls, round_num: int, sites: Sequence[str], size: int, args: SecAggArgs) -> SecureRound:
        params = Params(round_num, tuple(sorted(sites)), size, args)
        clients = {s: SecAggClient(s, params) for s in params.sites}
        server = SecAggServer(params)
        for site, client in clients.items():
            server.add_keys(site, client.public_keys())
        for site, client in clients.items():
            server.add_shares(site, client.encrypted_shares(server.keys))
        return cls(params, clients, server)

    def submit(self, site: str, vector: np.ndarray) -> None:
        client = self.clients[site]
        self.server.add_masked(site, client.masked_update(vector, self.server.inbox(site)))

    def finish(self) -> np.ndarray:
        survivors, dropped = self.server.survivors_and_dropped()
        answers = {s: self.clients[s].unmask_shares(survivors, dropped) for s in survivors}
        return self.server.unmasked_sum(answers)


@dataclass(frozen=True)
class Transcript:
    """What the platform's job store recorded of one round's stages (the server's view):
    the sites of the key exchange and their public keys, who shared, who survived (masked
    vector in) and who dropped (shared, no vector), and each survivor's unmask answers."""

    sites: tuple[str, ...]
    keys: Mapping[str, tuple[bytes, bytes]]
    sharers: frozenset[str]
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    answers: Mapping[str, Mapping[str, int]]


class SecAggFedAvg(Aggregator):
    """FedAvg under SecAgg+ masks: the server side sees masked vectors and their sum only."""

    Args = SecAggArgs
    args: SecAggArgs
    # the platform carries the four stages through the API (backend/services/secagg.py) and
    # calls `take_masked_uploads` and `use_transcript`: sites upload masked vectors only
    secure_aggregation = True

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._secure_round: SecureRound | None = None
        self._planned: list[str] | None = None
        self.dropped: list[str] = []
        self._masked_mode = False
        self._masked: dict[str, np.ndarray] = {}
        self._transcript: Transcript | None = None

    def take_masked_uploads(self) -> None:
        """Platform mode: each `accept` gets a site's masked vector (``{MASKED_KEY: uint64}``,
        masked on the site), never its weights; `aggregate` unmasks the sum with the round's
        `Transcript` (`use_transcript`)."""
        self._masked_mode = True

    def use_transcript(self, transcript: Transcript) -> None:
        self._transcript = transcript

    def expect_sites(self, sites: Sequence[str]) -> None:
        """The sites asked to train this round: their keys are exchanged before any update."""
        self._planned = list(sites)

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        self._begin_round(global_weights, round_num)
        self._secure_round = None
        self.dropped = []
        self._masked = {}

    def accept(self, site: str, weights: StateDict, num_samples: int) -> None:
        if self._masked_mode:
            self._accept_masked(site, weights)
            return
        n = self._admit(site, weights, num_samples)
        secure = self._secure(site)
        secure.submit(site, encode(self._open_global(), weights, n, self.args))

    def _accept_masked(self, site: str, upload: Mapping[str, torch.Tensor]) -> None:
        self._open_global()
        if self._result is not None:
            raise RoundClosedError(f"round {self.round_num} is aggregated already")
        if site in self._masked:
            raise DuplicateUpdateError(f"{site} already sent its masked vector this round")
        size = vector_size(self._open_global())
        tensor = upload.get(MASKED_KEY)
        if set(upload) != {MASKED_KEY} or tensor is None:
            raise InvalidUpdateError(
                f"a secure-aggregation upload holds one tensor {MASKED_KEY!r}, got {sorted(upload)[:5]}"
            )
        if tensor.dtype != torch.uint64 or tuple(tensor.shape) != (size,):
            raise InvalidUpdateError(
                f"{MASKED_KEY} must be uint64 of shape ({size},), got {tensor.dtype} "
                f"{tuple(tensor.shape)}"
            )
        self._masked[site] = tensor.numpy().copy()

    def _secure(self, site: str) -> SecureRound:
        if self._secure_round is None:
            sites = self._planned or []
            if site not in sites:
                raise SecAggError(
                    f"{site} is not among the round's expected sites {sites}: the loop calls "
                    "expect_sites(sites) before the round's updates"
                )
            self._secure_round = SecureRound.open(
                int(self.round_num or 0), sites, vector_size(self._open_global()), self.args
            )
        return self._secure_round

    def aggregate(self) -> StateDict:
        global_weights = self._open_global()
        if self._result is None:
            if self._masked_mode:
                self._result = decode(global_weights, self._unmask_uploads(), self.args)
            else:
                if self._secure_round is None:
                    raise NoUpdatesError(f"round {self.round_num}: no update was accepted")
                self.dropped = self._secure_round.server.survivors_and_dropped()[1]
                self._result = decode(global_weights, self._secure_round.finish(), self.args)
        return dict(self._result)

    def _unmask_uploads(self) -> np.ndarray:
        """The masked vectors' sum, unmasked with the transcript's answers (platform mode)."""
        t = self._transcript
        if t is None:
            raise SecAggError(f"round {self.round_num}: no transcript of the stages was given")
        if not t.survivors:
            raise NoUpdatesError(f"round {self.round_num}: no masked vector survived")
        missing = [s for s in t.survivors if s not in self._masked]
        if missing:
            raise SecAggError(
                f"round {self.round_num}: the masked vectors of {missing} were refused after the "
                "sites were told they survived: the sum cannot be unmasked"
            )
        params = Params(
            int(self.round_num or 0), tuple(t.sites), vector_size(self._open_global()), self.args
        )
        server = SecAggServer(params, keys=dict(t.keys), sharers=t.sharers)
        for site in t.survivors:
            server.add_masked(site, self._masked[site])
        survivors, dropped = server.survivors_and_dropped()
        if survivors != sorted(t.survivors) or dropped != sorted(t.dropped):
            raise SecAggError(
                f"round {self.round_num}: the uploads ({survivors} in, {dropped} dropped) do not "
                f"match the survivors the sites were told ({list(t.survivors)})"
            )
        self.dropped = dropped
        return server.unmasked_sum(t.answers)

    def round_metrics(self, site_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        if self._secure_round is None and not self._masked_mode:
            return {}
        return {"secagg_dropped_sites": float(len(self.dropped))}


__all__ = [
    "MASKED_KEY",
    "Params",
    "SecAggArgs",
    "SecAggClient",
    "SecAggError",
    "SecAggFedAvg",
    "SecAggServer",
    "SecureRound",
    "Transcript",
    "decode",
    "encode",
    "join_secret",
    "prg",
    "quantize",
    "split_secret",
]
