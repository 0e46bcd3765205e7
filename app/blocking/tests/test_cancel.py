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
