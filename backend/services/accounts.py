"""Users, API tokens and sites: creation, token lookup, heartbeats."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resonfl_server.backend.core.security import hash_password, hash_token, new_token
from resonfl_server.backend.models import ApiToken, Site, SiteStatus, User, utcnow
from resonfl_server.backend.services.errors import Conflict, InvalidSubmission, NotFound

USER_TOKEN_PREFIX = "rfl_u"
SITE_TOKEN_PREFIX = "rfl_s"


# -- lookup ------------------------------------------------------------------------------
def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    return row.user if row is not None else None


def site_for_token(session: Session, token: str) -> Site | None:
    return session.scalar(select(Site).where(Site.token_hash == hash_token(token)))


# -- users and tokens ----------------------------------------------------------------------
def create_user(
    session: Session, email: str, password: str | None = None, is_admin: bool = False
) -> tuple[User, str]:
    """Create a user and a first API token; return (user, token)."""
    email = email.strip().lower()
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email!r} exists")
    user = User(
        email=email,
        password_hash=hash_password(password) if password else None,
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    token = _add_token(session, user, "default")
    _commit(session, f"a user with email {email!r} exists")
    return user, token


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    token = new_token(USER_TOKEN_PREFIX)
    row = ApiToken(user=user, name=name, token_hash=hash_token(token))
    session.add(row)
    session.commit()
    return row, token


def ensure_admin(session: Session, email: str) -> str:
    """Make sure an admin with `email` exists and return a fresh API token for it
    (`resonfl up` prints it). Safe to call on every start."""
    email = email.strip().lower()
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email, is_admin=True)
        session.add(user)
        session.flush()
    user.is_admin = True
    token = _add_token(session, user, "resonfl-up")
    session.commit()
    return token


def set_password(session: Session, email: str, password: str) -> None:
    """Set (or replace) a user's sign-in password for the web UI."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user with email {email!r}")
    if len(password) < 8:
        raise InvalidSubmission("password", "password", "must have at least 8 characters")
    user.password_hash = hash_password(password)
    session.commit()


def ensure_first_password(session: Session, email: str) -> str | None:
    """Give a user who has no password a random one and return it (shown once), else None."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or user.password_hash:
        return None
    password = secrets.token_urlsafe(12)
    user.password_hash = hash_password(password)
    session.commit()
    return password


def _add_token(session: Session, user: User, name: str) -> str:
    token = new_token(USER_TOKEN_PREFIX)
    session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token)))
    return token


# -- sites -------------------------------------------------------------------------------
def register_site(session: Session, name: str) -> tuple[Site, str]:
    """Register a site and return (site, token); the token is only ever returned here."""
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"site {name!r} is already registered")
    token = new_token(SITE_TOKEN_PREFIX)
    site = Site(name=name, token_hash=hash_token(token), gpus=[])
    session.add(site)
    _commit(session, f"site {name!r} is already registered")
    return site, token


def rotate_site_token(session: Session, name: str) -> str:
    """A new token for an existing site (the old one stops working); registers it if new."""
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        return register_site(session, name)[1]
    token = new_token(SITE_TOKEN_PREFIX)
    site.token_hash = hash_token(token)
    session.commit()
    return token


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.name)))


def is_online(site: Site, timeout_s: float) -> bool:
    if site.last_heartbeat is None or site.status == SiteStatus.OFFLINE:
        return False
    return utcnow() - site.last_heartbeat <= timedelta(seconds=timeout_s)


def heartbeat(
    session: Session,
    site: Site,
    status: str,
    gpus: list[dict[str, Any]],
    datasets: list[dict[str, Any]] | None = None,
    policy: dict[str, Any] | None = None,
) -> Site:
    site.status = SiteStatus(status)
    site.gpus = gpus
    site.datasets = datasets or []
    site.policy = policy
    site.last_heartbeat = utcnow()
    session.commit()
    return site


def _commit(session: Session, conflict_detail: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(conflict_detail) from None
