"""Benchmark: database row writes and WAL bytes per block on the hot path.

A 10,000-follower campaign runs with the real worker, real Postgres and the fake over HTTP
(the network's write budget lifted so it takes seconds). Around it the test reads
pg_stat_user_tables (rows inserted, updated and deleted in blocking_* tables) and pg_stat_wal
(WAL bytes of the whole cluster, so anything else running adds to it), prints both per
block, and fails above 1.2 row writes per block.
"""

import time

import pytest
from django.db import connection

from blocking.models import Campaign
from blocking.tests.helpers import finished, start, unlimited

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FOLLOWERS = 10_000
MAX_ROW_WRITES_PER_BLOCK = 1.2


def row_writes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            " WHERE relname LIKE 'blocking\\_%%'"
        )
        return {name: (ins, upd, dele) for name, ins, upd, dele in cursor.fetchall()}


def wal_bytes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT wal_bytes, wal_records FROM pg_stat_wal")
        return cursor.fetchone()


def settled_counters(timeout=30):
    """Backends report their counters at most once a second and after 10 s idle: wait until
    two readings a few seconds apart agree."""
    deadline = time.monotonic() + timeout
    last = (row_writes(), wal_bytes())
    while time.monotonic() < deadline:
        time.sleep(3)
        now = (row_writes(), wal_bytes())
        if now[0] == last[0]:
            return now
        last = now
    return last


def test_a_block_costs_at_most_one_row_write(client, person, fakesky, celery_worker):
    user = person()
    unlimited(fakesky)
    rows_before, (wal_before, records_before) = settled_counters()
    campaign = finished(start(client, f"bench-{FOLLOWERS}.fake.test"), timeout=600)
    assert campaign.status == Campaign.Status.DONE, campaign.error
    state = fakesky.state(user.handle)
    assert state["block_count"] == state["distinct_blocked"] == FOLLOWERS
    rows_after, (wal_after, records_after) = settled_counters()
    per_table = {}
    for name, after in rows_after.items():
        before = rows_before.get(name, (0, 0, 0))
        delta = tuple(a - b for a, b in zip(after, before, strict=True))
        if any(delta):
            per_table[name] = delta
    writes = sum(sum(delta) for delta in per_table.values())
    print(f"\nrow writes during a {FOLLOWERS:,}-follower campaign (ins, upd, del):")
    for name, delta in sorted(per_table.items()):
        print(f"  {name}: {delta}")
    print(
        f"row writes per block: {writes / FOLLOWERS:.3f};"
        f" WAL bytes per block: {(wal_after - wal_before) / FOLLOWERS:.0f};"
        f" WAL records per block: {(records_after - records_before) / FOLLOWERS:.1f}"
    )
    assert writes / FOLLOWERS <= MAX_ROW_WRITES_PER_BLOCK
