"""Sign in with Bluesky through the app's own pages, the fake PDS's authorize page and the
fake authorization server, which fetches the app's client metadata and JWKS from a live
server: one identity, linking, refusal of someone else's account, unlinking revokes, the
fresh confirmation by signing in again, and a campaign the workers run on the grant."""

import json
import threading
import time
from unittest import mock

import pytest
from bluesky.tests.authorize import decide
from conftest import wait_until
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from blocking import crypto, network, signin, upkeep
from blocking.models import ActionRecord, Campaign, LinkedAccount
from core.signin import SIGNED_IN_AT

from .conftest import APP_PASSWORD, BLUESKY_PASSWORD
from .helpers import finished, start


def fresh(client):
    """The sign-in counts as fresh, as after typing a password."""
    session = client.session
    session[SIGNED_IN_AT] = time.time()
    session.save()


def signed_in_user(client):
    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


def test_the_client_metadata_and_jwks_describe_this_site(bluesky, client, live_server):
    host = live_server.url.split("://", 1)[1]
    meta = client.get("/oauth/client-metadata.json", HTTP_HOST=host).json()
    assert meta["client_id"] == f"http://{host}/oauth/client-metadata.json"
    assert meta["redirect_uris"] == [f"http://{host}/oauth/callback"]
    assert meta["token_endpoint_auth_method"] == "private_key_jwt"
    assert meta["dpop_bound_access_tokens"] is True
    assert "repo:app.bsky.graph.block?action=create&action=delete" in meta["scope"].split()
    keys = client.get("/oauth/jwks.json", HTTP_HOST=host).json()["keys"]
    assert [k["kid"] for k in keys] == [network.oauth_client_key().kid]
    assert "d" not in keys[0]


def test_without_a_client_key_there_is_no_sign_in_with_bluesky(client, settings):
    settings.OAUTH_CLIENT_KEY = ""
    assert client.get("/oauth/client-metadata.json").status_code == 404
    assert b"Sign in with Bluesky" not in client.get("/accounts/login/").content


def test_signing_in_makes_one_account_with_no_password_and_finds_it_again(bluesky, client):
    did = bluesky.account("alice.fake.test")
    response = bluesky.sign_in(client, "alice.fake.test")
    assert response.status_code == 302
    assert response["Location"] == "/campaigns/new/"
    user = signed_in_user(client)
    assert not user.has_usable_password()
    account = LinkedAccount.objects.get(user=user)
    assert account.did == did
    assert account.handle == "alice.fake.test"
    assert account.uses_oauth
    assert account.app_password_encrypted == ""
    assert BLUESKY_PASSWORD not in crypto.decrypt(account.oauth_grant_encrypted)
    client.logout()
    bluesky.sign_in(client, "alice.fake.test")
    assert signed_in_user(client) == user
    assert get_user_model().objects.count() == 1


def test_a_password_person_links_with_bluesky_and_the_app_password_goes(bluesky, client, person):
    alice = person("alice")
    assert alice.account.app_password_encrypted
    response = bluesky.sign_in(client, "alice.fake.test", password=APP_PASSWORD)
    assert response.status_code == 302
    account = LinkedAccount.objects.get(user=alice)
    assert account.uses_oauth
    assert account.app_password_encrypted == ""
    assert account.access_jwt_encrypted == ""
    assert signed_in_user(client) == alice


def test_someone_elses_bluesky_account_cannot_be_linked(
    bluesky, client, django_user_model, django_capture_on_commit_callbacks
):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    owner = signed_in_user(client)
    mallory = django_user_model.objects.create_user("mallory", password="pw-mallory-1")
    client.force_login(mallory)
    revoked_before = bluesky.fake.oauth_state()["grants_revoked"]
    with django_capture_on_commit_callbacks(execute=True):
        response = bluesky.sign_in(client, "alice.fake.test")
    assert response.status_code == 409
    assert b"linked to another Shoestring account" in response.content
    assert LinkedAccount.objects.get(user=owner).did == bluesky.fake.did("alice.fake.test")
    assert not LinkedAccount.objects.filter(user=mallory).exists()
    # The grant that was made for nothing is ended at once.
    assert bluesky.fake.oauth_state()["grants_revoked"] == revoked_before + 1


def test_a_denied_approval_changes_nothing(bluesky, client):
    bluesky.account("alice.fake.test")
    response = bluesky.sign_in(client, "alice.fake.test", decision="deny")
    assert response.status_code == 400
    assert b"did not approve" in response.content
    assert not LinkedAccount.objects.exists()
    assert "_auth_user_id" not in client.session


def test_a_callback_nobody_started_here_is_refused(bluesky, client):
    response = client.get("/oauth/callback", {"state": "made-up", "code": "x", "iss": "y"})
    assert response.status_code == 400
    assert b"not started in this browser" in response.content


def test_an_unknown_handle_is_said_plainly(bluesky, client):
    response = bluesky.start(client, "nobody.example.org")
    assert response.status_code == 404
    assert b"knows no account" in response.content


def test_unlinking_revokes_the_grant(bluesky, client, django_capture_on_commit_callbacks):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    fresh(client)
    grant = network.grant_of(LinkedAccount.objects.get())
    revoked_before = bluesky.fake.oauth_state()["grants_revoked"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/link/remove/", {"lift": "no"})
    assert response.status_code == 302
    assert not LinkedAccount.objects.exists()
    assert bluesky.fake.oauth_state()["grants_revoked"] == revoked_before + 1
    with network.oauth_client(grant.client_id) as oauth, pytest.raises(network.GrantRevoked):
        oauth.refresh(grant)


def test_two_workers_refreshing_at_once_spend_the_refresh_token_once(
    bluesky, client, transactional_db
):
    """Two processes hold the same grant and refresh together (the fake answers slowly):
    the row lock lets one spend the refresh token; the other takes what it stored."""
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    account = LinkedAccount.objects.get()
    old = network.grant_of(account)
    bluesky.fake.configure(latency_ms=300)
    results, errors = [], []

    def worker():
        try:
            results.append(network.renewer(account.pk)(old))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len({grant.refresh_token for grant in results}) == 1
    assert bluesky.fake.oauth_state()["refreshes"] == 1
    assert bluesky.fake.oauth_state()["grants_revoked"] == 0


def test_two_refreshes_of_one_grant_spend_its_refresh_token_once(bluesky, client):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    account = LinkedAccount.objects.get()
    old = network.grant_of(account)
    renew = network.renewer(account.pk)
    first = renew(old)
    # A second worker held the same old grant: it takes the stored one, spends nothing.
    second = renew(old)
    assert first.refresh_token != old.refresh_token
    assert second.refresh_token == first.refresh_token
    assert bluesky.fake.oauth_state()["refreshes"] == 1
    assert network.grant_of(LinkedAccount.objects.get()).refresh_token == first.refresh_token


def test_a_bluesky_sign_in_is_confirmed_with_the_bluesky_password_before_lifting(bluesky, client):
    """Signing in with Bluesky may pass on the browser's session at the PDS: lifting asks
    again, and that sign-in asks the PDS for the password (prompt=login)."""
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    page = client.post("/blocks/undo-all/", HTTP_REFERER="http://testserver/blocks/")
    assert page.status_code == 200
    assert b'id="confirm-bluesky"' in page.content
    assert b"confirm_password" not in page.content  # there is no password to type
    assert LinkedAccount.objects.get().lift_all_requested_at is None
    bluesky.start(client, "alice.fake.test", next_url="/blocks/")
    (kept,) = client.session[signin.PENDING].values()
    pending = json.loads(crypto.decrypt(kept))
    assert pending["prompt"] == "login"
    assert "verifier" not in kept  # the secrets wait encrypted
    client.session[signin.PENDING] = {}
    back = bluesky.sign_in(client, "alice.fake.test", next_url="/blocks/")
    assert back["Location"] == "/blocks/"
    assert client.post("/blocks/undo-all/").status_code == 302
    assert LinkedAccount.objects.get().lift_all_requested_at is not None


def test_a_signed_in_person_swaps_bluesky_accounts_only_when_freshly_signed_in(bluesky, client):
    bluesky.account("alice.fake.test")
    bob = bluesky.account("bob.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    alice_grant = network.grant_of(LinkedAccount.objects.get())
    user = signed_in_user(client)
    assert SIGNED_IN_AT not in client.session  # a Bluesky sign-in is not a fresh one
    # Signed in, the sign-in as bob asks bob's server for the password (prompt=login):
    # fresh, so the link moves to bob.
    with mock.patch.object(signin, "_link", wraps=signin._link) as link:
        moved = bluesky.sign_in(client, "bob.fake.test")
    assert link.call_args.kwargs["fresh"] is True
    assert moved.status_code == 302
    assert LinkedAccount.objects.get(user=user).did == bob
    # Without a fresh confirmation, another account's grant does not replace the link.
    stale = mock.Mock(user=user, session={})
    with pytest.raises(PermissionError, match="sign in again first"):
        signin._link(stale, alice_grant, fresh=False)
    assert LinkedAccount.objects.get(user=user).did == bob


def test_an_app_password_link_ends_the_bluesky_grant(
    bluesky, client, django_capture_on_commit_callbacks
):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    revoked_before = bluesky.fake.oauth_state()["grants_revoked"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/link/", {"handle": "alice.fake.test", "app_password": BLUESKY_PASSWORD}
        )
    assert response.status_code == 302
    account = LinkedAccount.objects.get()
    assert not account.uses_oauth
    assert account.app_password == BLUESKY_PASSWORD
    assert bluesky.fake.oauth_state()["grants_revoked"] == revoked_before + 1


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/x", "/\\evil"])
def test_next_never_leaves_the_site(bluesky, client, target):
    bluesky.account("alice.fake.test")
    back = bluesky.sign_in(client, "alice.fake.test", next_url=target)
    assert back["Location"] == "/campaigns/new/"


def test_staff_do_not_sign_in_with_bluesky(bluesky, client, person):
    alice = person("alice")
    type(alice).objects.filter(pk=alice.pk).update(is_staff=True)
    client.logout()
    response = bluesky.sign_in(client, "alice.fake.test", password=APP_PASSWORD)
    assert response.status_code == 409
    assert b"Staff sign in with their Shoestring password" in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.slow
def test_the_workers_block_with_the_grant_and_refresh_it(bluesky, client, celery_worker):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    grant = network.grant_of(LinkedAccount.objects.get())
    bluesky.fake.oauth(expire_access_tokens=True)
    campaign = start(client, "crowd-120.fake.test")
    finished(campaign, timeout=60)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DONE
    assert bluesky.fake.state("alice.fake.test")["block_count"] == 120
    assert ActionRecord.objects.count() == 120
    # The expired token was refreshed by a worker and the new one stored.
    assert bluesky.fake.oauth_state()["refreshes"] >= 1
    stored = network.grant_of(LinkedAccount.objects.get())
    assert stored.refresh_token != grant.refresh_token

    # Unlinking with lifting: the workers lift every block, then the maintenance pool
    # unlinks and hands the grant to a network pool, which revokes it at the PDS.
    revoked_before = bluesky.fake.oauth_state()["grants_revoked"]
    fresh(client)
    assert client.post("/link/remove/", {"lift": "yes"}).status_code == 302
    wait_until(
        lambda: (
            not LinkedAccount.objects.exists()
            and bluesky.fake.oauth_state()["grants_revoked"] == revoked_before + 1
        ),
        60,
        interval=0.5,
        message="the blocks lifted, the account unlinked and its grant revoked",
    )
    assert bluesky.fake.state("alice.fake.test")["block_count"] == 0


def test_a_bluesky_account_linked_here_cannot_be_linked_again_with_its_app_password(
    bluesky, client, django_user_model
):
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    mallory = django_user_model.objects.create_user("mallory", password="pw-mallory-1")
    client.force_login(mallory)
    response = client.post(
        "/link/", {"handle": "alice.fake.test", "app_password": BLUESKY_PASSWORD}
    )
    assert response.status_code == 200
    assert b"linked to another Shoestring account" in response.content
    assert not LinkedAccount.objects.filter(user=mallory).exists()


def test_a_replayed_callback_finds_nothing_to_finish(bluesky, client):
    bluesky.account("alice.fake.test")
    response = bluesky.start(client, "alice.fake.test")
    query, _ = decide(bluesky.onward(response), "alice.fake.test", BLUESKY_PASSWORD)
    assert client.get("/oauth/callback", query, HTTP_HOST=bluesky.host).status_code == 302
    again = client.get("/oauth/callback", query, HTTP_HOST=bluesky.host)
    assert again.status_code == 400
    assert b"finished already" in again.content
    assert bluesky.fake.oauth_state()["grants_revoked"] == 0


def test_a_lifted_unlink_that_a_sign_in_ended_keeps_its_grant(
    bluesky, client, django_capture_on_commit_callbacks
):
    """The maintenance pass saw the unlink pending; a sign-in ended it before the pass
    deleted the link: nothing is deleted, and the grant in use is not revoked."""
    bluesky.account("alice.fake.test")
    bluesky.sign_in(client, "alice.fake.test")
    account = LinkedAccount.objects.get()
    account.unlink_requested_at = timezone.now()  # as the pass read it, no longer stored
    revoked = bluesky.fake.oauth_state()["grants_revoked"]
    with django_capture_on_commit_callbacks(execute=True):
        upkeep._lifted(account)
    assert LinkedAccount.objects.filter(pk=account.pk).exists()
    assert bluesky.fake.oauth_state()["grants_revoked"] == revoked
