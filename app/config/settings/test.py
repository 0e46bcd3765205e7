"""Tests: a real PostgreSQL (started by the test command), fast password hashing."""
import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production-" + "x" * 20)

from .base import *  # noqa: E402,F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
