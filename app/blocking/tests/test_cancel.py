"""Cancel and unlink: a person can stop a campaign (only their own), and unlinking asks
whether to lift the blocks first and says how many stay otherwise; unspent tokens return."""

import time

import pytest
from conftest import wait_until

from blocking import buckets
from blocking.models import ActionRecord, Batch, Campaign, LinkedAccount
from blocking.tests.helpers import finished, start

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_person_cancels_a_running_campaign_and_gets_the_unspent_tokens_back(
    client, person, fakesky, celery_worker
):
    other = person("mallory")
    user = person()
    before = buckets.balance(user).tokens
    # 300 blocks per 30-second window: the campaign is still running when cancelled.
    fakesky.configure(write_points_per_hour=900, hour_window_s=30)
    campaign = start(client, "slow-1500.fake.test")
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert 'id="cancel"' in page
    wait_until(lambda: ActionRecord.objects.filter(owner=user).count() >= 300, 60, message="300")
    client.force_login(other)
    assert client.post(f"/campaigns/{campaign.pk}/cancel/").status_code == 404
    client.force_login(user)
    response = client.post(f"/campaigns/{campaign.pk}/cancel/", follow=True)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    assert campaign.tokens_refunded == 1500 - campaign.acted
    assert "unspent tokens are back" in response.content.decode()
    assert buckets.balance(user).tokens >= before - campaign.acted
    time.sleep(3)
    settled = fakesky.state(user.handle)["block_count"]
    time.sleep(3)
    assert fakesky.state(user.handle)["block_count"] == settled  # nothing more is blocked
    assert not Batch.objects.filter(campaign=campaign).exists()


def test_unlinking_can_lift_the_blocks_first(client, person, fakesky, celery_worker):
    user = person()
    finished(start(client, "lifted-120.fake.test", scope="both"), timeout=120)
    page = client.get("/link/").content.decode()
    assert "holds 121 of your blocks" in page
    response = client.post("/link/remove/", {"lift": "yes"}, follow=True)
    assert "Lifting your 121 blocks" in response.content.decode()
    wait_until(lambda: fakesky.state(user.handle)["block_count"] == 0, 60, message="lifted")
    wait_until(lambda: not LinkedAccount.objects.filter(user=user).exists(), 30, message="unlinked")
    assert not ActionRecord.objects.filter(owner=user).exists()


def test_unlinking_without_lifting_says_how_many_stay(client, person, fakesky, celery_worker):
    user = person()
    finished(start(client, "kept-120.fake.test", scope="both"), timeout=120)
    response = client.post("/link/remove/", {"lift": "no"}, follow=True)
    assert "The 121 blocks and mutes made here stay in place on Bluesky." in (
        response.content.decode()
    )
    assert not LinkedAccount.objects.filter(user=user).exists()
    time.sleep(3)
    assert fakesky.state(user.handle)["block_count"] == 121


def test_a_batch_saved_while_its_campaign_is_cancelled_waits_for_it_and_deadlocks_nothing(person):
    """Cancel (campaigns.end) locks the campaign's row, then deletes its batches; a batch task
    saving its result (batches._save) must take the two rows in the same order, or each waits
    for the other and Postgres aborts one (the person's Cancel answered 500). Here Cancel's
    transaction holds the campaign's row on a connection of its own while a batch is saved in
    a thread; Cancel then deletes the batch at once and commits, and the save goes on after it,
    still recording the block the network made."""
    import threading

    import psycopg2
    from bluesky.tids import next_tids
    from django.db import connection, connections
    from django.utils import timezone

    from blocking import batches

    user = person()
    campaign = Campaign.objects.create(
        user=user, target_handle="t.fake.test", target_did="did:plc:t", action="block",
        scope="followers", expected=1, found=1,
    )  # fmt: skip
    batch = Batch.objects.create(
        owner_id=user.pk, campaign=campaign, op="block", dids=["did:plc:b"], handles=["b"],
        rkeys=next_tids(1), not_before=timezone.now(),
    )  # fmt: skip
    params = connection.get_connection_params()
    cancel = psycopg2.connect(**params)
    # Another session watches who waits (a transaction sees pg_stat_activity as it first read it).
    watcher = psycopg2.connect(**params)
    watcher.autocommit = True
    errors = []

    def save():
        try:
            batches._save(batch, done={"did:plc:b": batch.rkeys[0]}, failed={})
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    try:
        with cancel.cursor() as cursor:
            cursor.execute("SET lock_timeout = '20s'")
            cursor.execute(
                "SELECT id FROM blocking_campaign WHERE id = %s FOR UPDATE", [campaign.pk]
            )
            saving = threading.Thread(target=save)
            saving.start()
            # The save waits on a row lock (the campaign's, with the fix; the campaign's
            # counters after it took the batch's row, without).
            wait_until(lambda: waiting_on_a_lock(watcher), 30, message="the save to wait")
            cursor.execute("DELETE FROM blocking_batch WHERE campaign_id = %s", [campaign.pk])
            assert cursor.rowcount == 1
        cancel.commit()
    finally:
        cancel.close()
        watcher.close()
    saving.join(60)
    assert not saving.is_alive()
    assert errors == []
    assert ActionRecord.objects.filter(owner=user, subject_did="did:plc:b").count() == 1
    assert Campaign.objects.get(pk=campaign.pk).acted == 1


def waiting_on_a_lock(watcher):
    with watcher.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0
