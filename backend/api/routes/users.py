"""Users (admin) and API tokens (any user)."""

from __future__ import annotations

from fastapi import APIRouter, status

from resonfl_server.backend.api.deps import CurrentAdmin, CurrentUser, SessionDep
from resonfl_server.backend.schemas.users import (
    TokenCreate,
    TokenPublic,
    UserCreate,
    UserCreated,
    UserPublic,
)
from resonfl_server.backend.services import accounts

router = APIRouter(tags=["users"])


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserCreated)
def create_user(body: UserCreate, session: SessionDep, _admin: CurrentAdmin) -> UserCreated:
    """Create a user (admins only); the response carries the user's first API token."""
    user, token = accounts.create_user(session, body.email, body.password, body.is_admin)
    return UserCreated(**UserPublic.model_validate(user).model_dump(), token=token)


@router.get("/users/me", response_model=UserPublic)
def read_user_me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenPublic)
def create_token(body: TokenCreate, session: SessionDep, user: CurrentUser) -> TokenPublic:
    """A new API token for the caller; shown once."""
    row, token = accounts.create_token(session, user, body.name)
    return TokenPublic(id=row.id, name=row.name, created_at=row.created_at, token=token)
