"""Tests: a real PostgreSQL started by tests/run-pytest.sh, fast password hashing."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-" + "x" * 20)
# pg_virtualenv exports the throwaway cluster as PG* variables.
for name, pg_name in [
    ("HOST", "PGHOST"),
    ("PORT", "PGPORT"),
    ("USER", "PGUSER"),
    ("PASSWORD", "PGPASSWORD"),
]:
    if pg_name in os.environ:
        os.environ.setdefault(f"DATABASE_{name}", os.environ[pg_name])

# A fixed test-only key: tests must be able to read what they encrypted.
os.environ.setdefault("SHOESTRING_CREDENTIALS_KEY", "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=")

# Sign in with Bluesky's client key: made once per test run here, and inherited (through
# os.environ) by the workers and beat the tests start, as every production process shares one.
if "SHOESTRING_OAUTH_CLIENT_KEY" not in os.environ:
    import base64

    from joserfc import jwk

    _key = jwk.ECKey.generate_key("P-256", private=True).as_pem(private=True)
    os.environ["SHOESTRING_OAUTH_CLIENT_KEY"] = base64.b64encode(_key).decode()

from .base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The fake Bluesky runs on loopback; tests point BLUESKY_SERVICE_URL at it after start-up.
BLUESKY_ALLOW_LOOPBACK_PDS = True
ALLOWED_HOSTS = ["*"]
# Tests render pages without running collectstatic first.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
