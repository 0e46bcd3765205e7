"""Build provider clients from the settings: for a linked account (persisting refreshed
sessions and the PDS its DID document names), or for signing in to link one."""

from bluesky.client import BlueskyClient
from bluesky.provider import Session
from django.conf import settings

from . import crypto
from .models import LinkedAccount


def budget_hook(interactive):
    """What the client calls before each request: take one from the shared per-address
    budget (blocking.pacing). A page a person waits on is never refused: it is counted,
    and bulk work waits longer."""
    from . import pacing

    def take(nsid):
        if interactive == "page":
            pacing.force_address_budget(1)
        else:
            pacing.take_address_budget(1, interactive=interactive)

    return take


def new_client(identifier, app_password, service_url=None, **options) -> BlueskyClient:
    """A client that signs in at service_url, by default the configured entryway."""
    options.setdefault("before_request", budget_hook("page"))
    return BlueskyClient(
        service_url or settings.BLUESKY_SERVICE_URL,
        identifier,
        app_password,
        timeout=settings.BLUESKY_TIMEOUT_S,
        allow_loopback_pds=settings.BLUESKY_ALLOW_LOOPBACK_PDS,
        **options,
    )


def client_for(account: LinkedAccount, interactive="page") -> BlueskyClient:
    """A client for this account; interactive: True (a task a person waits on), False
    (bulk work, which leaves the interactive reserve), or "page" (a web page)."""
    session = None
    if account.access_jwt_encrypted and account.refresh_jwt_encrypted:
        session = Session(
            did=account.did,
            handle=account.handle,
            access_jwt=crypto.decrypt(account.access_jwt_encrypted),
            refresh_jwt=crypto.decrypt(account.refresh_jwt_encrypted),
            pds_url=account.service_url or None,
        )

    def remember(new_session: Session):
        changes = {
            "access_jwt_encrypted": crypto.encrypt(new_session.access_jwt),
            "refresh_jwt_encrypted": crypto.encrypt(new_session.refresh_jwt),
        }
        if new_session.pds_url and new_session.pds_url != account.service_url:
            changes["service_url"] = new_session.pds_url  # the account moved to another PDS
            account.service_url = new_session.pds_url
        LinkedAccount.objects.filter(pk=account.pk).update(**changes)

    # The account signs in again at its own PDS, which its DID document named.
    return new_client(
        account.did or account.handle,
        account.app_password,
        service_url=account.service_url,
        session=session,
        on_session=remember,
        before_request=budget_hook(interactive),
    )
