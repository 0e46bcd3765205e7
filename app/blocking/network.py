"""Build provider clients from the settings: for a linked account (persisting refreshed
sessions and the PDS its DID document names, or its OAuth grant's rotated tokens), for
signing in to link one, and the app's OAuth client."""

import base64
import binascii
import logging
from functools import cache

from bluesky.client import BlueskyClient, check_pds_url
from bluesky.errors import ProviderError
from bluesky.oauth import DpopAuth, Grant, GrantRevoked, OAuthClient
from bluesky.provider import Session
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from joserfc import jwk

from . import crypto
from .models import LinkedAccount

log = logging.getLogger(__name__)


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
        allow_pds_networks=settings.BLUESKY_ALLOW_PDS_NETWORK,
        **options,
    )


@cache
def _client_key(encoded):
    try:
        key = jwk.ECKey.import_key(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as error:
        raise ImproperlyConfigured(
            "SHOESTRING_OAUTH_CLIENT_KEY must be an EC P-256 private key in PEM, base64-encoded"
            f" onto one line ({error})"
        ) from None
    if key.as_dict(private=False).get("crv") != "P-256" or not key.is_private:
        raise ImproperlyConfigured("SHOESTRING_OAUTH_CLIENT_KEY must be a P-256 private key")
    key.ensure_kid()
    return key


def oauth_enabled() -> bool:
    return bool(settings.OAUTH_CLIENT_KEY)


def oauth_client_key() -> jwk.ECKey:
    if not settings.OAUTH_CLIENT_KEY:
        raise ImproperlyConfigured(
            "SHOESTRING_OAUTH_CLIENT_KEY is not set: no sign-in with Bluesky"
        )
    return _client_key(settings.OAUTH_CLIENT_KEY)


def _check_url(url):
    return check_pds_url(
        url, settings.BLUESKY_ALLOW_LOOPBACK_PDS, settings.BLUESKY_ALLOW_PDS_NETWORK
    )


def _resolve_handle(handle):
    with new_client("", "") as client:
        return client.resolve_handle(handle)


def oauth_client(client_id, redirect_uri="") -> OAuthClient:
    """The app's OAuth client under this client_id (its metadata URL, one per host name)."""
    return OAuthClient(
        client_id,
        oauth_client_key(),
        resolve_handle=_resolve_handle,
        plc_url=settings.BLUESKY_PLC_URL,
        check_url=_check_url,
        redirect_uri=redirect_uri,
        timeout=settings.BLUESKY_TIMEOUT_S,
    )


def grant_of(account: LinkedAccount) -> Grant:
    return Grant.from_json(crypto.decrypt(account.oauth_grant_encrypted))


def renewer(account_pk):
    """What refreshes one account's grant: under a lock on its row, so that two workers never
    spend the same refresh token (a replayed one ends the grant). A worker that waited for
    the lock takes the tokens the other one stored."""

    def renew(grant: Grant) -> Grant:
        with transaction.atomic():
            with connection.cursor() as cursor:
                # A rotated refresh token lost in a crash would end the grant at its next
                # use (the server's default is synchronous_commit = off).
                cursor.execute("SET LOCAL synchronous_commit = on")
            row = LinkedAccount.objects.select_for_update().filter(pk=account_pk).first()
            if row is None or not row.oauth_grant_encrypted:
                raise GrantRevoked("the account was unlinked")
            stored = grant_of(row)
            if stored.refresh_token != grant.refresh_token:
                return stored
            with oauth_client(stored.client_id) as client:
                fresh = client.refresh(stored)
            row.oauth_grant_encrypted = crypto.encrypt(fresh.to_json())
            row.service_url = fresh.pds_url  # the account may have moved to another PDS host
            row.save(update_fields=["oauth_grant_encrypted", "service_url"])
            return fresh

    return renew


def revoke_grant(grant_json: str) -> None:
    """End a grant at its authorization server; a failure is logged (the grant then lives
    until it expires; the person can also revoke it from their PDS)."""
    grant = Grant.from_json(grant_json)
    try:
        with oauth_client(grant.client_id) as client:
            client.revoke(grant)
    except (ProviderError, ImproperlyConfigured) as error:
        log.warning("could not revoke the OAuth grant of %s: %s", grant.did, error)


def client_for(account: LinkedAccount, interactive="page") -> BlueskyClient:
    """A client for this account; interactive: True (a task a person waits on), False
    (bulk work, which leaves the interactive reserve), or "page" (a web page)."""
    if account.oauth_grant_encrypted:
        return new_client(
            account.did,
            "",
            service_url=account.service_url,
            oauth=DpopAuth(grant_of(account), renewer(account.pk)),
            before_request=budget_hook(interactive),
        )
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
