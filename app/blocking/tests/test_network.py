"""The app's side of the client: the PDS a linked account's DID document names, sessions kept
and refreshed, and the settings that decide whether a loopback PDS, or one on a test network,
may get tokens."""

import ipaddress
import os
import time

import pytest
from bluesky.errors import UnsafePds
from conftest import run_manage

from blocking import crypto
from blocking.models import LinkedAccount
from blocking.network import client_for, new_client

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


def production_setting(name, **env_overrides):
    """A setting as config.settings.production makes it of this environment, or the error."""
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
        f"from django.conf import settings; print(settings.{name})",
    )
    if result.returncode:
        return result.stderr.strip().splitlines()[-1]
    return result.stdout.strip().splitlines()[-1]


def loopback_setting(**env_overrides):
    return production_setting("BLUESKY_ALLOW_LOOPBACK_PDS", **env_overrides)


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


def test_a_pds_on_a_test_network_is_allowed_only_inside_the_cidrs_named(settings):
    pds = "http://172.30.0.10:8787"
    with new_client("", "", service_url=pds) as client, pytest.raises(UnsafePds):
        client.pds_url  # noqa: B018 - the property checks the address
    settings.BLUESKY_ALLOW_PDS_NETWORK = (ipaddress.ip_network("172.30.0.0/24"),)
    with new_client("", "", service_url=pds) as client:
        assert client.pds_url == pds
    outside = "http://172.31.0.10:8787"
    with new_client("", "", service_url=outside) as client, pytest.raises(UnsafePds):
        client.pds_url  # noqa: B018


def test_the_test_networks_are_cidrs_checked_at_start_up():
    name = "BLUESKY_ALLOW_PDS_NETWORK"
    assert production_setting(name) == "()"
    assert production_setting(name, **{name: "172.30.0.0/24, fd00:30::/64"}) == (
        "(IPv4Network('172.30.0.0/24'), IPv6Network('fd00:30::/64'))"
    )
    assert production_setting(name, **{name: "172.30.0.0/33"}) == (
        f"django.core.exceptions.ImproperlyConfigured: {name} must be comma-separated CIDRs"
        " like 172.30.0.0/24, got '172.30.0.0/33'"
    )
    for public in ("0.0.0.0/0", "93.184.216.0/24", "169.254.0.0/16"):
        assert production_setting(name, **{name: public}) == (
            f"django.core.exceptions.ImproperlyConfigured: {name} may name only private test"
            f" networks (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7), got {public!r}"
        )
