"""Sites as users see them; registering one is for admins."""

from __future__ import annotations

from fastapi import APIRouter, status

from resonfl_server.backend.api.deps import CurrentAdmin, CurrentUser, SessionDep, SettingsDep
from resonfl_server.backend.models import Site
from resonfl_server.backend.schemas.sites import SiteCreate, SiteCreated, SitePublic, SitesPublic
from resonfl_server.backend.services import accounts

router = APIRouter(prefix="/sites", tags=["sites"])


def site_public(site: Site, heartbeat_timeout_s: float) -> SitePublic:
    public = SitePublic.model_validate(site)
    public.online = accounts.is_online(site, heartbeat_timeout_s)
    return public


@router.get("", response_model=SitesPublic)
def read_sites(session: SessionDep, settings: SettingsDep, _user: CurrentUser) -> SitesPublic:
    sites = accounts.list_sites(session)
    data = [site_public(s, settings.site_heartbeat_timeout_s) for s in sites]
    return SitesPublic(data=data, count=len(data))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SiteCreated)
def create_site(
    body: SiteCreate, session: SessionDep, settings: SettingsDep, _admin: CurrentAdmin
) -> SiteCreated:
    """Register a site; the response carries its token, shown only this once."""
    site, token = accounts.register_site(session, body.name)
    public = site_public(site, settings.site_heartbeat_timeout_s)
    return SiteCreated(**public.model_dump(), token=token)
