"""Per-person token bucket: four fields, refilled lazily, debited in one SQL statement.

The debit is a single UPDATE whose WHERE clause checks the refilled balance, so
two concurrent campaigns cannot both spend the same tokens: the second UPDATE
waits for the first's row lock and re-checks the new balance.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .models import TokenBucket

# Tokens now = min(capacity, tokens + refill rate x hours since the last refill).
_REFILLED = (
    "LEAST(capacity, tokens + refill_per_hour"
    " * GREATEST(0, EXTRACT(EPOCH FROM (clock_timestamp() - refilled_at))) / 3600.0)"
)


@dataclass(frozen=True)
class Balance:
    tokens: int
    capacity: int
    refill_per_hour: float

    def seconds_until(self, cost):
        """How long until `cost` tokens are available, or None if never (over capacity)."""
        if cost > self.capacity or self.refill_per_hour <= 0:
            return None
        return max(0.0, (cost - self.tokens) * 3600.0 / self.refill_per_hour)


def bucket_for(user):
    bucket, _ = TokenBucket.objects.get_or_create(
        user=user,
        defaults={
            "tokens": settings.TOKEN_BUCKET_CAPACITY,
            "capacity": settings.TOKEN_BUCKET_CAPACITY,
            "refill_per_hour": settings.TOKEN_BUCKET_REFILL_PER_HOUR,
            "refilled_at": timezone.now(),
        },
    )
    return bucket


def balance(user) -> Balance:
    bucket_for(user)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_REFILLED}, capacity, refill_per_hour FROM blocking_tokenbucket"  # noqa: S608
            " WHERE user_id = %s",
            [user.pk],
        )
        tokens, capacity, rate = cursor.fetchone()
    return Balance(int(tokens), capacity, rate)


def debit(user, cost) -> bool:
    """Take `cost` tokens if the person has them; True if taken. Atomic, never overspends."""
    bucket_for(user)
    return take(user.pk, cost)


def take(user_id, cost) -> bool:
    """debit() for the workers, who know the person by id only: the bucket exists."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE blocking_tokenbucket SET tokens = {_REFILLED} - %s,"  # noqa: S608
            " refilled_at = GREATEST(refilled_at, clock_timestamp())"
            f" WHERE user_id = %s AND {_REFILLED} >= %s RETURNING tokens",
            [cost, user_id, cost],
        )
        return cursor.fetchone() is not None


def credit(user_id, amount):
    """Give back tokens (work that was refused before it cost anything), up to capacity.
    Takes the user's id: the workers that give tokens back may not read auth_user."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE blocking_tokenbucket SET tokens = LEAST(capacity, {_REFILLED} + %s),"  # noqa: S608
            " refilled_at = GREATEST(refilled_at, clock_timestamp()) WHERE user_id = %s",
            [amount, user_id],
        )
