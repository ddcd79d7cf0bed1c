"""Request-scoped dependencies as `Annotated` aliases: a session, the caller, the stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.models import INT_MAX, Site, User
from resonfl_server.backend.services import accounts
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.storage import ArtifactStore

_bearer = HTTPBearer(auto_error=False, description="an API token (users) or a site token")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store  # type: ignore[no-any-return]


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
TokenDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

# Path and query numbers are bounded by what an INTEGER column holds, so an id like 2**63
# is a 422 naming the parameter, never a database overflow.
JobId = Annotated[int, Path(ge=1, le=INT_MAX, description="a job id")]
RoundNum = Annotated[int, Path(ge=0, le=INT_MAX, description="a round number (0-based)")]
Skip = Annotated[int, Query(ge=0, le=INT_MAX)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def get_current_user(session: SessionDep, creds: TokenDep) -> User:
    if creds is None:
        raise _unauthorized("missing Authorization: Bearer <API token>")
    user = accounts.user_for_token(session, creds.credentials)
    if user is None:
        raise _unauthorized("invalid API token")
    return user


def get_current_admin(user: Annotated[User, Depends(get_current_user)]) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admins only")
    return user


def get_current_site(session: SessionDep, creds: TokenDep) -> Site:
    if creds is None:
        raise _unauthorized("missing Authorization: Bearer <site token>")
    site = accounts.site_for_token(session, creds.credentials)
    if site is None:
        raise _unauthorized("invalid site token")
    return site


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentAdmin = Annotated[User, Depends(get_current_admin)]
CurrentSite = Annotated[Site, Depends(get_current_site)]
