"""A lock with expiry, in Postgres, so a periodic task never overlaps its previous run.

If the holder dies, the lock simply expires; no one has to clean it up.
"""

from contextlib import contextmanager
from datetime import timedelta

from django.db import connection
from django.utils import timezone


@contextmanager
def task_lock(name, ttl_seconds):
    """Yield True if this run holds the lock, False if a previous run still does."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO blocking_tasklock (name, expires_at) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at"
            " WHERE blocking_tasklock.expires_at < %s RETURNING name",
            [name, now + timedelta(seconds=ttl_seconds), now],
        )
        acquired = cursor.fetchone() is not None
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM blocking_tasklock WHERE name = %s", [name])
