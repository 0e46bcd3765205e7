"""The token bucket under real concurrency on real PostgreSQL."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from blocking import buckets
from blocking.models import TokenBucket


@pytest.mark.django_db
def test_tokens_refill_lazily_up_to_capacity(django_user_model):
    user = django_user_model.objects.create_user("r")
    TokenBucket.objects.create(
        user=user,
        tokens=0,
        capacity=1000,
        refill_per_hour=3600,
        refilled_at=timezone.now() - timedelta(seconds=100),
    )
    assert 100 <= buckets.balance(user).tokens <= 102
    TokenBucket.objects.filter(user=user).update(refilled_at=timezone.now() - timedelta(days=3))
    assert buckets.balance(user).tokens == 1000


@pytest.mark.django_db
def test_a_debit_larger_than_the_balance_takes_nothing(django_user_model):
    user = django_user_model.objects.create_user("d")
    TokenBucket.objects.create(
        user=user, tokens=50, capacity=100, refill_per_hour=0, refilled_at=timezone.now()
    )
    assert not buckets.debit(user, 51)
    assert buckets.debit(user, 50)
    assert buckets.balance(user).tokens == 0
    assert buckets.balance(user).seconds_until(101) is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_campaigns_cannot_overspend(django_user_model):
    user = django_user_model.objects.create_user("c")
    TokenBucket.objects.create(
        user=user, tokens=1000, capacity=1000, refill_per_hour=0, refilled_at=timezone.now()
    )
    start = threading.Barrier(8)
    results = []

    def spend():
        start.wait()
        try:
            results.append(buckets.debit(user, 300))
        finally:
            connection.close()

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 3
    assert buckets.balance(user).tokens == 100
