"""Passwords are scrypt-hashed, tokens stored as sha256 only."""

from __future__ import annotations

import hashlib

from resonfl_server.backend.core.security import (
    hash_password,
    hash_token,
    new_token,
    verify_password,
)


def test_a_password_verifies_only_against_its_own_hash() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("correct horse", "garbage")


def test_tokens_are_random_prefixed_and_hashed_with_sha256() -> None:
    first, second = new_token("rfl_u"), new_token("rfl_u")
    assert first != second and first.startswith("rfl_u_")
    assert hash_token(first) == hashlib.sha256(first.encode()).hexdigest()
