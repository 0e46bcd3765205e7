"""Idempotent against the network itself: every fault the fake can inject during a
campaign, a block removed by hand before its expiry, and Postgres restarted mid-campaign
leave every follower blocked exactly once and nothing pending or being undone."""

import shutil
import subprocess
import time

import httpx
import pytest
from conftest import wait_until
from django.db import connection
from django.utils import timezone

from blocking.models import ActionRecord, Batch, Campaign
from blocking.tests.conftest import APP_PASSWORD
from blocking.tests.helpers import finished, start, unlimited

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
APPLY_WRITES = "com.atproto.repo.applyWrites"


def under_way(campaign, acted, timeout=120):
    def check():
        campaign.refresh_from_db()
        return campaign.acted >= acted

    wait_until(check, timeout, message=f"{acted} blocks of campaign {campaign.pk}")


def injected(fakesky):
    return fakesky.state()["totals"]["faults"]["injected"]


def arm(fakesky, timeout=120, **faults):
    """Arm faults and wait until the campaign has run into all of them."""
    before = injected(fakesky)
    count = sum(faults.get(key, 0) for key in ("fail_count", "stall_count", "drop_count"))
    fakesky.faults(**faults)
    wait_until(
        lambda: injected(fakesky) >= before + count, timeout, message=f"faults {faults} injected"
    )


def all_blocked_once(fakesky, user, campaign, count):
    state = fakesky.state(user.handle)
    assert campaign.status == Campaign.Status.DONE, campaign.error
    assert state["duplicates"] == 0
    assert state["block_count"] == state["distinct_blocked"] == count
    assert ActionRecord.objects.filter(owner=user).count() == count
    wait_until(lambda: not Batch.objects.filter(owner=user).exists(), 30, message="no batch left")


def test_every_fault_the_network_can_inject_leaves_no_duplicate_and_none_missing(
    client, person, fakesky, celery_worker
):
    user = person()
    unlimited(fakesky)
    fakesky.configure(latency_ms=20)
    # 60 batches of 200: calls enough to meet every fault below before the campaign ends
    # (with 15, it sometimes ended before the last were injected).
    campaign = start(client, "faulty-12000.fake.test")
    under_way(campaign, 300)
    # Applied, then the connection closed before the answer: the retry's creates find
    # their own records on the PDS.
    arm(fakesky, drop_count=3, only=[APPLY_WRITES])
    # 500 (also what a create of an existing record gets), 502, 503.
    for status in (500, 502, 503):
        arm(fakesky, fail_status=status, fail_count=2, only=[APPLY_WRITES])
    # Calls held longer than the client's timeout (5 s in the tests).
    arm(fakesky, stall_s=7, stall_count=2, only=[APPLY_WRITES])
    assert celery_worker.kill_children()  # and the worker's processes killed mid-batch
    finished(campaign, timeout=300)
    all_blocked_once(fakesky, user, campaign, 12_000)


def test_a_block_removed_by_hand_before_its_expiry_still_ends_cleanly(
    client, person, fakesky, celery_worker
):
    user = person()
    campaign = finished(start(client, "manual-120.fake.test", duration="1"), timeout=120)
    assert fakesky.state(user.handle)["block_count"] == 120
    # The person unblocks three of them in the Bluesky app.
    session = httpx.post(
        f"{fakesky.url}/xrpc/com.atproto.server.createSession",
        json={"identifier": user.handle, "password": APP_PASSWORD},
    ).json()
    for row in ActionRecord.objects.filter(owner=user)[:3]:
        httpx.post(
            f"{fakesky.url}/xrpc/com.atproto.repo.deleteRecord",
            headers={"Authorization": f"Bearer {session['accessJwt']}"},
            json={"repo": session["did"], "collection": "app.bsky.graph.block", "rkey": row.rkey},
        ).raise_for_status()
    assert fakesky.state(user.handle)["block_count"] == 117
    ActionRecord.objects.filter(owner=user).update(until=timezone.now())  # a week passes
    wait_until(lambda: fakesky.state(user.handle)["block_count"] == 0, 60, message="all lifted")
    wait_until(
        lambda: (
            not ActionRecord.objects.filter(owner=user).exists()
            and not Batch.objects.filter(owner=user).exists()
        ),
        30,
        message="nothing left being undone",
    )
    assert campaign.status == Campaign.Status.DONE


def regress_cluster():
    """The pg_virtualenv cluster this run uses, if pg_ctlcluster can restart it."""
    if not shutil.which("pg_ctlcluster"):
        return None
    port = str(connection.settings_dict["PORT"])
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, name
    return None


def test_postgres_restarted_mid_campaign_loses_and_repeats_nothing(
    client, person, fakesky, celery_worker
):
    cluster = regress_cluster()
    if cluster is None:
        pytest.skip("the test database is not a local cluster pg_ctlcluster can restart")
    user = person()
    unlimited(fakesky)
    fakesky.configure(latency_ms=20)
    campaign = start(client, "outage-4000.fake.test")
    under_way(campaign, 600)
    # As on the host: the postmaster killed (immediate stop), back ten seconds later.
    subprocess.run(["pg_ctlcluster", *cluster, "stop", "-m", "immediate"], check=True)
    time.sleep(10)
    subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
    back = time.monotonic()
    connection.close()
    finished(campaign, timeout=300)
    print(f"\ncampaign done {time.monotonic() - back:.0f}s after Postgres came back")
    all_blocked_once(fakesky, user, campaign, 4000)
    assert time.monotonic() - back < 180
