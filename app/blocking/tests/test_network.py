"""The app's side of the client: the PDS a linked account's DID document names, sessions kept
and refreshed, and the setting that decides whether a loopback PDS may get tokens."""

import os
import time

import pytest
from conftest import run_manage

from blocking import crypto
from blocking.models import LinkedAccount
from blocking.network import client_for

pytestmark = pytest.mark.django_db


def test_linking_stores_the_pds_the_did_document_names(person, fakesky):
    user = person()
    account = LinkedAccount.objects.get(user=user)
    assert account.service_url == fakesky.url
    assert account.did == fakesky.did(user.handle)


def test_a_refreshed_session_is_kept_for_the_next_task(person, fakesky):
    fakesky.configure(access_token_ttl_s=1)
    user = person()
    before = LinkedAccount.objects.get(user=user)
    time.sleep(2.05)
    with client_for(before) as client:
        assert client.resolve("crowd-5.fake.test").followers_count == 5
    after = LinkedAccount.objects.get(user=user)
    assert crypto.decrypt(after.access_jwt_encrypted) != crypto.decrypt(before.access_jwt_encrypted)
    assert after.service_url == fakesky.url
    state = fakesky.state(user.handle)
    assert (state["logins"], state["refreshes"]) == (1, 1)


def test_an_account_that_moved_to_another_pds_is_followed_there(person, fakesky):
    fakesky.configure(access_token_ttl_s=1)
    user = person()
    moved = fakesky.url.replace("127.0.0.1", "localhost")
    fakesky.configure(public_url=moved)
    time.sleep(2.05)
    with client_for(LinkedAccount.objects.get(user=user)) as client:
        client.resolve("crowd-5.fake.test")
    assert LinkedAccount.objects.get(user=user).service_url == moved


def loopback_setting(**env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BLUESKY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="s" * 60,
        **env_overrides,
    )
    result = run_manage(
        env,
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.BLUESKY_ALLOW_LOOPBACK_PDS)",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_production_refuses_a_loopback_pds_unless_the_network_itself_is_local():
    assert loopback_setting() == "False"
    assert loopback_setting(BLUESKY_SERVICE_URL="https://bsky.social") == "False"
    assert loopback_setting(BLUESKY_SERVICE_URL="http://127.0.0.1:8787") == "True"
    assert (
        loopback_setting(
            BLUESKY_SERVICE_URL="http://127.0.0.1:8787", BLUESKY_ALLOW_LOOPBACK_PDS="false"
        )
        == "False"
    )
    assert loopback_setting(BLUESKY_ALLOW_LOOPBACK_PDS="true") == "True"
