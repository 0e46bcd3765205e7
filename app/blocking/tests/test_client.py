"""The thin Bluesky client against the fake server, over real HTTP."""

import time

import pytest
from bluesky.client import BlueskyClient
from bluesky.errors import CredentialsRevoked, NotFound, RateLimited


@pytest.fixture
def client(fakesky):
    fakesky.account("me.fake.test", "app-pass")
    with BlueskyClient(fakesky.url, "me.fake.test", "app-pass") as bluesky:
        yield bluesky


def test_resolve_returns_the_follower_count(client):
    profile = client.resolve("@Crowd-250000.fake.test")
    assert profile.did == "did:plc:crowd250000"
    assert profile.followers_count == 250_000


def test_resolve_of_an_unknown_handle_is_not_found(client):
    with pytest.raises(NotFound):
        client.resolve("nobody.example.org")


def test_followers_come_in_pages_with_a_cursor(client):
    first = client.followers_page("crowd-250.fake.test", limit=100)
    second = client.followers_page("crowd-250.fake.test", first.cursor, limit=100)
    third = client.followers_page("crowd-250.fake.test", second.cursor, limit=100)
    dids = [p.did for p in first.followers + second.followers + third.followers]
    assert len(dids) == len(set(dids)) == 250
    assert third.cursor is None


def test_block_many_splits_into_calls_of_at_most_200_writes(client, fakesky):
    dids = [f"did:plc:crowd1000x{i}" for i in range(450)]
    created = client.block_many(dids)
    assert sorted(created) == sorted(dids)
    state = fakesky.state("me.fake.test")
    assert state["block_count"] == 450
    assert state["write_calls"] == 3


def test_unblock_deletes_the_records(client, fakesky):
    created = client.block_many(["did:plc:crowd10x1", "did:plc:crowd10x2"])
    client.unblock_many(list(created.values()))
    assert fakesky.state("me.fake.test")["block_count"] == 0


def test_rate_limit_raises_with_the_reset_time(client, fakesky):
    fakesky.configure(write_points_per_hour=30, hour_window_s=60)
    client.block_many([f"did:plc:crowd100x{i}" for i in range(10)])  # 30 points: all of it
    with pytest.raises(RateLimited) as raised:
        client.block_many(["did:plc:crowd100x50"])
    assert raised.value.reset_at > time.time()
    assert client.rate_limit.remaining == 0


def test_an_expired_session_is_refreshed(client, fakesky):
    client.login()
    fakesky.configure(access_token_ttl_s=0.5)
    client.login()
    old_token = client.session.access_jwt
    time.sleep(0.6)
    assert client.resolve("crowd-5.fake.test").followers_count == 5
    assert client.session.access_jwt != old_token


def test_revoked_credentials_are_terminal(client, fakesky):
    client.login()
    fakesky.revoke("me.fake.test")
    with pytest.raises(CredentialsRevoked):
        client.resolve("crowd-5.fake.test")
