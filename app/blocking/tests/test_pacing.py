"""Pacing by budget, with the real worker and beat, real Postgres and Redis, and the fake
over HTTP with its real limits. Windows are compressed where a real one would take hours,
and each test says by how much; the limits themselves are Bluesky's."""

import time
from datetime import datetime

import pytest
import redis
from conftest import wait_until
from django.conf import settings

from blocking.models import ActionRecord, Batch
from blocking.tests.helpers import address_budget, finished, start
from config.celery_app import app

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def broker_counts(broker):
    """Messages waiting in the bulk and interactive queues, and delivered but unacknowledged."""
    return (
        broker.llen("bulk") + broker.llen("interactive"),
        broker.hlen("unacked"),
    )


def worker_counts():
    """(tasks the worker holds with an ETA/countdown, the longest wait among them in s,
    tasks it has reserved or is running), from `celery inspect`."""
    inspect = app.control.inspect(timeout=1)
    scheduled = [t for tasks in (inspect.scheduled() or {}).values() for t in tasks]
    reserved = sum(len(t) for t in (inspect.reserved() or {}).values())
    active = sum(len(t) for t in (inspect.active() or {}).values())
    longest = 0.0
    for entry in scheduled:
        eta = entry.get("eta")
        if eta:
            longest = max(longest, datetime.fromisoformat(eta).timestamp() - time.time())
    return len(scheduled), longest, reserved + active


def test_a_25000_follower_campaign_is_paced_by_the_accounts_budget(
    client, person, fakesky, celery_worker, redis_url
):
    user = person()
    # Compressed 1,800 times: Bluesky's hour is 2 s here and its day 48 s; the points are
    # Bluesky's (5,000 an hour, 35,000 a day, 3 a block). The per-address window is 30 s
    # (3,000 requests) so the address budget does not decide the pace.
    fakesky.configure(hour_window_s=2, day_window_s=48, ip_window_s=30)
    address_budget(3000, 30)
    broker = redis.Redis.from_url(redis_url)
    campaign = start(client, "huge-25000.fake.test")
    most = {"broker": 0, "unacked": 0, "scheduled": 0, "countdown": 0.0, "worker": 0, "rows": 0}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        campaign.refresh_from_db()
        if campaign.status != "running":
            break
        waiting, unacked = broker_counts(broker)
        scheduled, longest, held = worker_counts()
        for key, value in (
            ("broker", waiting),
            ("unacked", unacked),
            ("scheduled", scheduled),
            ("countdown", longest),
            ("worker", held),
            ("rows", Batch.objects.filter(owner=user).count()),
        ):
            most[key] = max(most[key], value)
        time.sleep(1)
    state = fakesky.state(user.handle)
    print(
        f"\n25,000 followers: {campaign.status} in"
        f" {time.monotonic() - deadline + 600:.0f}s; most at once: {most['broker']} messages"
        f" waiting in the broker, {most['unacked']} delivered and unacknowledged,"
        f" {most['worker']} reserved or running in the worker, {most['scheduled']} held with"
        f" a countdown (longest {most['countdown']:.1f}s), {most['rows']} Batch rows waiting;"
        f" the network refused {state['rate_limited']} writes for the budget"
    )
    assert campaign.status == "done", campaign.error
    assert state["block_count"] == state["distinct_blocked"] == 25_000
    assert state["duplicates"] == 0
    assert ActionRecord.objects.filter(owner=user).count() == 25_000
    # The broker and the worker hold a few of this account's tasks, not hundreds.
    bound = settings.MAX_IN_FLIGHT_PER_ACCOUNT + 4  # + a page, start, the periodic tasks
    assert most["broker"] + most["unacked"] <= 2 * bound
    assert most["worker"] <= bound
    assert most["countdown"] <= settings.MAX_COUNTDOWN_S


def test_fifty_people_stay_under_the_address_budget_and_a_single_block_goes_first(
    client, person, fakesky, celery_worker
):
    # The per-address limit compressed ten times: 300 requests per 30 s (Bluesky: 3,000
    # per 300 s, the same rate); the workers' shared bucket is sized for it.
    fakesky.configure(
        ip_requests_per_window=300,
        ip_window_s=30,
        write_points_per_hour=1_000_000,
        write_points_per_day=1_000_000,
    )
    address_budget(300, 30)
    people = [person(f"p{i:02d}") for i in range(50)]
    campaigns = []
    for someone in people:
        client.force_login(someone)
        campaigns.append(start(client, "crowd-200.fake.test"))
    time.sleep(8)  # the bulk work is under way and the shared budget spent
    waiting = person("urgent")
    started = time.monotonic()
    single = start(client, "troll-10.fake.test", scope="account")
    finished(single, timeout=60)
    single_s = time.monotonic() - started
    for campaign in campaigns:
        finished(campaign, timeout=600)
    elapsed = time.monotonic() - started
    totals = fakesky.state()["totals"]
    print(
        f"\n50 people x 200 followers: done {elapsed:.0f}s after the single block started;"
        f" the single block took {single_s:.1f}s; {totals['requests']} requests,"
        f" {totals['ip_rate_limited']} refused for the per-address limit"
    )
    assert single.status == "done"
    assert fakesky.state(waiting.handle)["block_count"] == 1
    assert single_s < 15
    assert totals["ip_rate_limited"] == 0
    for someone, campaign in zip(people, campaigns, strict=True):
        assert campaign.status == "done", campaign.error
        assert fakesky.state(someone.handle)["block_count"] == 200


def test_waiting_work_is_rows_not_tasks(client, person, fakesky, celery_worker):
    """While an account's budget is spent, its work waits as Batch rows, not in the broker."""
    user = person()
    # One hour window of 30 s holding 300 blocks (900 points): 1,500 followers need 5.
    fakesky.configure(write_points_per_hour=900, hour_window_s=30)
    campaign = start(client, "slow-1500.fake.test")
    wait_until(
        lambda: ActionRecord.objects.filter(owner=user).count() >= 300, 60, message="300 blocks"
    )
    time.sleep(3)
    campaign.refresh_from_db()
    queued = Batch.objects.filter(owner=user, state="queued").count()
    ready = Batch.objects.filter(owner=user, state="ready").count()
    _, longest, _ = worker_counts()
    assert campaign.acted <= 300 + settings.BLOCK_BATCH_SIZE
    # the rest of the 1,500 waits as rows (less what is in flight)
    assert ready >= (1500 - 300) // settings.BLOCK_BATCH_SIZE - settings.MAX_IN_FLIGHT_PER_ACCOUNT
    assert queued <= settings.MAX_IN_FLIGHT_PER_ACCOUNT
    assert longest <= settings.MAX_COUNTDOWN_S
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "blocks an hour" in page
