"""Users and API tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from resonfl_server.backend.schemas.common import CleanStr

EMAIL_MAX = 320


class UserCreate(BaseModel):
    email: CleanStr = Field(min_length=3, max_length=EMAIL_MAX, pattern=r"^[^@\s]+@[^@\s]+$")
    password: CleanStr | None = Field(None, min_length=8, max_length=200)
    is_admin: bool = False

    @field_validator("email")
    @classmethod
    def _fits_once_normalized(cls, value: str) -> str:
        # accounts.create_user stores the address lower-cased; some letters grow (İ -> i̇)
        if len(value.strip().lower()) > EMAIL_MAX:
            raise ValueError(f"must have at most {EMAIL_MAX} characters once lower-cased")
        return value


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    is_admin: bool
    created_at: datetime


class UserCreated(UserPublic):
    token: str = Field(description="an API token for the new user; shown only once")


class TokenCreate(BaseModel):
    name: CleanStr = Field("default", min_length=1, max_length=100)


class TokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    token: str = Field(description="the bearer token; shown only once, stored as sha256")
