"""Build a provider client for a person's linked account, persisting refreshed sessions."""

from bluesky.client import BlueskyClient
from bluesky.provider import Session
from django.conf import settings

from . import crypto
from .models import LinkedAccount


def client_for(account: LinkedAccount) -> BlueskyClient:
    session = None
    if account.access_jwt_encrypted and account.refresh_jwt_encrypted:
        session = Session(
            did=account.did,
            handle=account.handle,
            access_jwt=crypto.decrypt(account.access_jwt_encrypted),
            refresh_jwt=crypto.decrypt(account.refresh_jwt_encrypted),
        )

    def remember(new_session: Session):
        LinkedAccount.objects.filter(pk=account.pk).update(
            access_jwt_encrypted=crypto.encrypt(new_session.access_jwt),
            refresh_jwt_encrypted=crypto.encrypt(new_session.refresh_jwt),
        )

    return BlueskyClient(
        account.service_url,
        account.did or account.handle,
        account.app_password,
        session=session,
        on_session=remember,
        timeout=settings.BLUESKY_TIMEOUT_S,
    )
