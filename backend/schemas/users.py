"""Users and API tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class UserCreate(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str | None = Field(None, min_length=8, max_length=200)
    is_admin: bool = False


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    is_admin: bool
    created_at: datetime


class UserCreated(UserPublic):
    token: str = Field(description="an API token for the new user; shown only once")


class TokenCreate(BaseModel):
    name: str = Field("default", min_length=1, max_length=100)


class TokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    token: str = Field(description="the bearer token; shown only once, stored as sha256")
