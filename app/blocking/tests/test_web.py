"""What a person sees in the browser: linking, starting a campaign, its refusals."""

from unittest import mock

import pytest
from celery import Celery
from django.conf import settings
from django.db import connection
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from blocking import batches, buckets, tasks
from blocking.models import Batch, Campaign, KillSwitch, LinkedAccount, TokenBucket
from blocking.tests import helpers
from blocking.tests.conftest import APP_PASSWORD

pytestmark = pytest.mark.django_db


def test_app_password_and_tokens_are_encrypted_at_rest(person):
    user = person()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT app_password_encrypted, access_jwt_encrypted FROM blocking_linkedaccount"
            " WHERE user_id = %s",
            [user.pk],
        )
        stored_password, stored_token = cursor.fetchone()
    assert APP_PASSWORD not in stored_password
    assert stored_token
    assert LinkedAccount.objects.get(user=user).app_password == APP_PASSWORD


def test_a_wrong_app_password_is_refused_and_nothing_is_stored(
    client, fakesky, settings, django_user_model
):
    settings.BLUESKY_SERVICE_URL = fakesky.url
    fakesky.account("bob.fake.test", "right-password")
    client.force_login(django_user_model.objects.create_user("bob", password="x"))
    response = client.post("/link/", {"handle": "bob.fake.test", "app_password": "wrong"})
    assert b"Bluesky refused that handle and app password." in response.content
    assert not LinkedAccount.objects.exists()


def test_unlinking_deletes_the_credentials(client, person):
    user = person()
    response = client.post("/link/remove/")
    assert response.status_code == 302
    assert not LinkedAccount.objects.filter(user=user).exists()


def start(client, target, scope="both", action="block", duration="4"):
    return client.post(
        "/campaigns/new/",
        {"target": target, "action": action, "scope": scope, "duration": duration},
    )


def test_an_unknown_handle_is_refused(client, person):
    person()
    response = start(client, "nobody.example.org")
    assert b"There is no Bluesky account called @nobody.example.org." in response.content
    assert not Campaign.objects.exists()


def test_a_target_over_the_follower_cap_is_refused(client, person, settings):
    settings.FOLLOWER_CAP = 1000
    person()
    response = start(client, "crowd-1001.fake.test")
    assert b"has 1,001 followers; the limit is 1,000" in response.content
    assert not Campaign.objects.exists()


def test_the_cap_does_not_apply_to_the_account_alone(client, person, settings):
    settings.FOLLOWER_CAP = 1000
    person()
    response = start(client, "crowd-1001.fake.test", scope="account")
    assert response.status_code == 302
    assert Campaign.objects.get().expected == 1


def sent_tasks():
    """Record the messages the app publishes instead of sending them."""
    sent = []

    def record(app, name, args=None, kwargs=None, queue=None, **options):
        queue = queue or settings.CELERY_TASK_ROUTES[name]["queue"]  # where routing sends it
        sent.append((name, list(args), queue))

    return sent, mock.patch.object(Celery, "send_task", autospec=True, side_effect=record)


def test_a_single_block_reaches_the_network_in_one_task(
    client, person, fakesky, django_capture_on_commit_callbacks
):
    """The click itself queues the target's block: one interactive task, no hop through
    start_campaign first, and that task makes the record."""
    user = person()
    sent, publishing = sent_tasks()
    with publishing, django_capture_on_commit_callbacks(execute=True):
        campaign = helpers.start(client, "troll-10.fake.test", scope="account")
    batch = Batch.objects.get(campaign=campaign)
    assert sent == [("blocking.act_on_batch", [batch.pk], "interactive")]
    batches.act_on_batch.apply(args=(batch.pk,))
    campaign.refresh_from_db()
    assert (campaign.status, campaign.acted) == ("done", 1)
    assert fakesky.state(user.handle)["block_count"] == 1


def test_a_campaign_sends_its_target_and_first_page_from_the_click(
    client, person, django_capture_on_commit_callbacks
):
    person()
    sent, publishing = sent_tasks()
    with publishing, django_capture_on_commit_callbacks(execute=True):
        campaign = helpers.start(client, "crowd-300.fake.test", scope="both")
    batch = Batch.objects.get(campaign=campaign)
    assert sorted(sent) == [
        ("blocking.act_on_batch", [batch.pk], "interactive"),
        ("blocking.fetch_follower_page", [campaign.pk, ""], "bulk"),
    ]
    assert campaign.next_page_at is not None  # beat sends the page again if it is lost


def test_a_kill_switch_on_starting_campaigns_leaves_them_to_beat(
    client, person, django_capture_on_commit_callbacks
):
    person()
    KillSwitch.objects.create(task_name=tasks.start_campaign.name, engaged=True)
    sent, publishing = sent_tasks()
    with publishing, django_capture_on_commit_callbacks(execute=True):
        campaign = helpers.start(client, "troll-10.fake.test", scope="account")
    assert sent == []
    assert not Batch.objects.exists()
    assert (campaign.status, campaign.found) == ("running", 0)
    assert campaign.next_page_at is not None  # due for beat once the switch is off


def test_ones_own_account_is_refused(client, person):
    user = person()
    response = start(client, user.handle)
    assert b"That is your own account." in response.content


def test_a_campaign_costing_more_than_the_bucket_holds_shows_the_balance_and_refill(client, person):
    user = person()
    TokenBucket.objects.filter(user=user).update(tokens=100, capacity=5000, refill_per_hour=1000)
    response = start(client, "crowd-300.fake.test", scope="followers")
    assert (
        b"This needs 300 tokens and you have 100; enough will have refilled by" in response.content
    )
    assert not Campaign.objects.exists()
    assert buckets.balance(user).tokens == 100


def test_a_valid_campaign_debits_its_cost_and_shows_its_page(client, person, settings):
    user = person()
    TokenBucket.objects.filter(user=user).update(refill_per_hour=0)
    response = start(client, "crowd-300.fake.test", scope="both", duration="forever")
    campaign = Campaign.objects.get()
    assert response["Location"] == f"/campaigns/{campaign.pk}/"
    assert campaign.expected == campaign.tokens_debited == 301
    assert campaign.until is None
    assert buckets.balance(user).tokens == settings.TOKEN_BUCKET_CAPACITY - 301
    page = client.get(response["Location"])
    assert b"<progress" in page.content
    progress = client.get(f"/campaigns/{campaign.pk}/progress.json").json()
    assert progress["status"] == "running"
    assert progress["expected"] == 301


def test_another_persons_campaign_is_not_visible(client, person, django_user_model):
    person()
    start(client, "crowd-10.fake.test")
    campaign = Campaign.objects.get()
    client.force_login(django_user_model.objects.create_user("mallory", password="x"))
    assert client.get(f"/campaigns/{campaign.pk}/").status_code == 404


def admin_signed_in(client, staff):
    """Staff signed in to the admin as with their password and their authenticator's code
    (the sign-in itself: core/tests/test_admin_otp.py)."""
    device = TOTPDevice.objects.create(user=staff, name="authenticator", confirmed=True)
    client.force_login(staff)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


def test_staff_engage_a_kill_switch_in_the_admin(client, django_user_model):
    staff = django_user_model.objects.create_superuser("ops", password="x")
    admin_signed_in(client, staff)
    response = client.post(
        "/admin/blocking/killswitch/add/",
        {"task_name": "blocking.act_on_batch", "engaged": "on", "reason": "bad deploy"},
    )
    assert response.status_code == 302, response.content.decode()[:500]
    assert KillSwitch.objects.get().task_name == "blocking.act_on_batch"


def test_staff_give_a_person_more_tokens_in_the_admin(client, person, django_user_model):
    user = person()
    bucket = TokenBucket.objects.get(user=user)
    admin_signed_in(client, django_user_model.objects.create_superuser("ops", password="x"))
    response = client.post(
        f"/admin/blocking/tokenbucket/{bucket.pk}/change/",
        {
            "tokens": "90000",
            "capacity": "100000",
            "refill_per_hour": "5000",
            "refilled_at_0": "2026-01-01",
            "refilled_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:800]
    bucket.refresh_from_db()
    assert (bucket.capacity, bucket.refill_per_hour) == (100000, 5000)
