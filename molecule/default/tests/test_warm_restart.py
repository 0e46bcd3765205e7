"""Warm restarts, proven: when a pool's lifetime ends or systemd restarts it, the task in
flight finishes by itself and its result is recorded, no prefork child is killed, and work
that arrives meanwhile is run once, by the fresh worker.

The fake network answers every request after LATENCY_MS, so a batch of blocks is a task of
known, long duration; the signal comes while it is in flight.
"""

import re

import pytest
from shoestring_host import (
    ArmedShell,
    blocked_once,
    broker_is_redis,
    fake_call,
    host_time,
    invocation,
    journal,
    main_pid,
    manage_shell,
    redis_cli,
    start_campaign,
    wait_for_campaign,
    wait_for_log,
    wait_until,
)

BULK = "shoestring-worker-bulk.service"
LATENCY_MS = 15000  # the old worker drains for this long: the stale page is sent meanwhile
FOLLOWERS = 50  # one batch


def trigger_restart(host):
    host.check_output("systemctl restart --no-block %s", BULK)


def trigger_lifetime_expiry(host):
    # GNU timeout's own timer is SIGALRM: receiving it is exactly the lifetime ending.
    host.check_output("kill -ALRM %s", str(main_pid(host, BULK)))


TRIGGERS = {"systemctl restart": trigger_restart, "lifetime expiry": trigger_lifetime_expiry}


def clear_bulk_work(host):
    """Drop the batches and campaigns earlier tests left (the browser journey's thousands of
    unblocks would hold the bulk pool, and their calls would take LATENCY_MS too); returns
    the messages still in the bulk queue."""
    manage_shell(
        host,
        "from blocking.models import Batch, Campaign; Batch.objects.all().delete();"
        " print(Campaign.objects.filter(status='running').update(status='cancelled'))",
    )
    return int(redis_cli(host, "llen", "bulk").stdout.strip() or 0)


@pytest.fixture
def slow_network(host, fake_bluesky):
    if not broker_is_redis(host):
        pytest.skip("proved once, in the default (Redis) scenario")
    # The bulk pool must be idle, or the batch this test waits for queues behind others.
    wait_until(lambda: clear_bulk_work(host) == 0, 60, message="the bulk queue stays busy")
    yield
    fake_call(host, "POST", "/_fake/config", {"latency_ms": 0})


# Sends a page of work for the bulk pool (a stale one: it does nothing when it runs).
STALE_PAGE = """
from blocking import tasks
print(tasks.fetch_follower_page.delay(int(arg), 'stale-cursor').id)
print(time.time())
"""


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_task_in_flight_finishes_when_the_pool_restarts(host, slow_network, trigger):
    # Armed before anything starts: the page is sent the moment the signal has gone.
    with ArmedShell(host, "stale-page", STALE_PAGE) as sender:
        since = host_time(host)
        old_worker = invocation(host, BULK)
        campaign_id = start_campaign(
            host,
            FOLLOWERS,
            latency_ms=LATENCY_MS,
            write_points_per_hour=1_000_000,
            write_points_per_day=1_000_000,
        )
        try:
            received_at, _, received = wait_for_log(
                host,
                BULK,
                since,
                r"Task blocking\.act_on_batch\[(?P<id>[0-9a-f-]+)\] received",
                120,
            )
        except AssertionError as error:
            campaign = manage_shell(
                host,
                "from blocking.models import Campaign;"
                f" c = Campaign.objects.get(pk={campaign_id}); print(c.status, repr(c.error))",
            )
            raise AssertionError(f"{error}; the campaign: {campaign}") from None
        task_id = received["id"]

        signalled_at = host_time(host)
        TRIGGERS[trigger](host)
        # Work that arrives while the old worker drains is for the new worker.
        stale_page, sent_at = sender.fire(campaign_id, lines=2)
        sent_at = float(sent_at)
    ended_at, ended_in, ended = wait_for_log(
        host,
        BULK,
        since,
        rf"Task blocking\.act_on_batch\[{task_id}\] (?P<outcome>succeeded|retry)"
        rf"( in (?P<seconds>[0-9.]+)s)?|WorkerLostError",
        120,
    )
    assert ended["outcome"] == "succeeded", f"the task in flight did not finish: {ended[0]}"
    assert ended_in == old_worker, "the task was run again by a new worker, not finished"
    assert received_at < signalled_at < sent_at < ended_at, "the page was sent after the drain"

    # The page is run once, by the new worker, after the old one is gone. The draining
    # worker may still take it (Redis answers the poll it had open when the signal came:
    # kombu's BRPOP), but then it never starts it and gives it back as it exits.
    def replaced():
        run = invocation(host, BULK)
        return run if run not in ("", old_worker) else None

    new_worker = wait_until(replaced, 60, message="a new bulk worker")
    done_at, done_in, _ = wait_for_log(
        host, BULK, since, rf"Task blocking\.fetch_follower_page\[{stale_page}\] succeeded", 60
    )
    page = [
        (when, run, message)
        for when, run, message in journal(host, BULK, signalled_at - 1)
        if stale_page in message
    ]
    story = "\n".join(
        f"{when - signalled_at:+.1f}s {'old' if run == old_worker else 'new'}: {message}"
        for when, run, message in journal(host, BULK, signalled_at - 1)
    )
    assert done_in == new_worker, f"the page was not run by the new worker:\n{story}"
    assert [
        message for _, run, message in page if run == old_worker and "received" not in message
    ] == [], story
    taken_back = any(run == old_worker for _, run, _ in page)
    if taken_back:
        assert re.search(r"Restoring \d+ unacknowledged message", story), (
            f"the old worker took the page and did not give it back:\n{story}"
        )
    assert sum("succeeded" in message for _, _, message in page) == 1, story
    consumed_at = min(when for when, run, _ in page if run == new_worker)
    assert ended_at < consumed_at <= done_at

    assert wait_for_campaign(host, campaign_id, timeout=120) == "done"
    blocked_once(host, FOLLOWERS)
    log = "\n".join(message for _, _, message in journal(host, BULK, since))
    assert "WorkerLostError" not in log
    assert "exited with 'signal" not in log
    assert "Warm shutdown" in log

    print(
        f"\n{trigger}: act_on_batch received at +0.0s,"
        f" signal at +{signalled_at - received_at:.1f}s,"
        f" finished at +{ended_at - received_at:.1f}s (it ran {float(ended['seconds']):.1f}s,"
        " in the old worker); a page sent meanwhile"
        f" {'was taken by the draining worker, given back,' if taken_back else 'waited'}"
        f" and run by the new worker at +{consumed_at - received_at:.1f}s"
    )
