"""Credentials at rest: Fernet (AES-128-CBC + HMAC) with a key from settings."""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet(key):
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "SHOESTRING_CREDENTIALS_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
            "make one with: python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None


def fernet():
    key = settings.SHOESTRING_CREDENTIALS_KEY
    if not key:
        raise ImproperlyConfigured(
            "SHOESTRING_CREDENTIALS_KEY is not set: this service may not handle network credentials"
        )
    return _fernet(key)


def encrypt(plain: str) -> str:
    return fernet().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "stored credentials cannot be decrypted with SHOESTRING_CREDENTIALS_KEY"
            " (was the key changed?)"
        ) from None
