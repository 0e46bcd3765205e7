"""The front door: guessing passwords is cooled off per account and per address, and a
sign-in that is not fresh cannot lift a person's protection without the password again.

Through Django's test client with the address nginx would pass (X-Real-IP); nginx's own
limit on these POSTs is checked on a Molecule host.
"""

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

from blocking.models import ActionRecord, Campaign, LinkedAccount
from core.signin import SIGNED_IN_AT

pytestmark = pytest.mark.django_db

A, B = "198.51.100.7", "203.0.113.9"


def sign_in(username, password, address):
    """A sign-in from its own browser (a client of its own) at an address."""
    browser = Client(HTTP_X_REAL_IP=address)
    response = browser.post("/accounts/login/", {"username": username, "password": password})
    return browser, response


@pytest.fixture
def people(settings):
    settings.AXES_FAILURE_LIMIT = 5
    users = get_user_model().objects
    return {name: users.create_user(name, password=f"right-{name}") for name in ("alice", "bob")}


def test_the_fifth_wrong_password_locks_the_account_even_for_the_right_one(people):
    for attempt in range(1, 5):
        _, response = sign_in("alice", f"guess-{attempt}", A)
        assert response.status_code == 200, attempt
        assert 'id="login-error"' in response.content.decode()
    _, response = sign_in("alice", "guess-5", A)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many wrong passwords (5)" in page
    assert "even the right password is refused" in page
    # The account is locked from any address, the right password too.
    _, response = sign_in("alice", "right-alice", B)
    assert response.status_code == 429
    # Someone else, elsewhere, is not affected.
    _, response = sign_in("bob", "right-bob", B)
    assert response.status_code == 302


def test_signing_up_signs_in_fresh():
    browser = Client(HTTP_X_REAL_IP=A)
    form = {"username": "carol", "password1": "a-long-pass-1", "password2": "a-long-pass-1"}
    response = browser.post("/signup/", form)
    assert response.status_code == 302
    assert browser.session[SIGNED_IN_AT] > time.time() - 60


def test_guessing_many_accounts_from_one_address_locks_the_address(people):
    for attempt in range(5):
        sign_in(f"nobody-{attempt}", "guess", A)
    _, response = sign_in("bob", "right-bob", A)
    assert response.status_code == 429
    _, response = sign_in("bob", "right-bob", B)
    assert response.status_code == 302


def test_the_lock_ends_after_the_cool_off(people, settings):
    for attempt in range(5):
        sign_in("alice", f"guess-{attempt}", A)
    assert sign_in("alice", "right-alice", A)[1].status_code == 429
    # The cool-off runs from the last failure.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get(username="alice").attempt_time
        - settings.AXES_COOLOFF_TIME
        - timedelta(seconds=1)
    )
    _, response = sign_in("alice", "right-alice", A)
    assert response.status_code == 302
    # A good sign-in wipes the slate: the count starts again.
    assert not AccessAttempt.objects.filter(username="alice").exists()


@pytest.fixture
def protected(person, client):
    """A linked person holding three blocks, a running campaign, signed in long ago."""
    user = person()
    for n in range(3):
        ActionRecord.objects.create(
            owner=user, kind="block", subject_did=f"did:plc:held{n}", rkey=f"3kheld{n}"
        )
    user.campaign = Campaign.objects.create(
        user=user,
        target_handle="crowd.fake.test",
        target_did="did:plc:crowd",
        action="block",
        scope="followers",
        expected=100,
        tokens_debited=100,
    )
    session = client.session
    session[SIGNED_IN_AT] = time.time() - 301
    session.save()
    return user


def lift_requested(user):
    return LinkedAccount.objects.get(user=user).lift_all_requested_at is not None


def test_unblock_everybody_after_a_stale_sign_in_asks_for_the_password(protected, client):
    response = client.post("/blocks/undo-all/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Confirm it is you" in page
    assert "This lifts all 3 blocks and mutes made here" in page
    assert not lift_requested(protected)

    response = client.post("/blocks/undo-all/", {"confirm_password": "wrong"})
    assert response.status_code == 403
    assert "Nothing was changed" in response.content.decode()
    assert not lift_requested(protected)

    response = client.post("/blocks/undo-all/", {"confirm_password": "pw-alice"})
    assert response.status_code == 302
    assert lift_requested(protected)
    # Fresh now: the next such action within the window goes straight through.
    assert client.post(f"/campaigns/{protected.campaign.pk}/cancel/").status_code == 302
    protected.campaign.refresh_from_db()
    assert protected.campaign.status == Campaign.Status.CANCELLED


def test_unlink_keeps_its_choice_through_the_confirmation(protected, client):
    response = client.post("/link/remove/", {"lift": "yes"})
    page = response.content.decode()
    assert "stops your 1 running campaigns and lifts all 3 blocks and mutes" in page
    assert 'name="lift" value="yes"' in page
    assert LinkedAccount.objects.filter(user=protected).exists()
    protected.campaign.refresh_from_db()
    assert protected.campaign.status == Campaign.Status.RUNNING

    response = client.post("/link/remove/", {"lift": "yes", "confirm_password": "pw-alice"})
    assert response.status_code == 302
    assert lift_requested(protected)  # lifted first, unlinked after
    protected.campaign.refresh_from_db()
    assert protected.campaign.status == Campaign.Status.CANCELLED


def test_cancelling_a_campaign_after_a_stale_sign_in_asks_first(protected, client):
    response = client.post(f"/campaigns/{protected.campaign.pk}/cancel/")
    assert "This cancels the campaign against @crowd.fake.test" in response.content.decode()
    protected.campaign.refresh_from_db()
    assert protected.campaign.status == Campaign.Status.RUNNING


def test_wrong_confirmations_count_as_failed_sign_ins(protected, client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert client.post("/blocks/undo-all/", {"confirm_password": "x"}).status_code == 403
    response = client.post("/blocks/undo-all/", {"confirm_password": "x"})
    assert response.status_code == 429
    assert "Sign-in paused" in response.content.decode()
    response = client.post("/blocks/undo-all/", {"confirm_password": "pw-alice"})
    assert response.status_code == 429
    assert not lift_requested(protected)
