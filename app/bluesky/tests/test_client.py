"""The thin Bluesky client against the fake server over real HTTP, and, where the fake cannot
produce an answer (a proxy's bare 429, a scripted sequence), against a scripted transport."""

import ipaddress
import json
import time

import httpx
import pytest

from bluesky.client import BlueskyClient, check_pds_url
from bluesky.errors import (
    AccountSuspended,
    CredentialsRevoked,
    NotFound,
    ProviderError,
    RateLimited,
    RkeyTaken,
    UnsafePds,
)
from bluesky.tids import next_tids

PASSWORD = "app-pass"


def new(url, **options):
    options.setdefault("allow_loopback_pds", True)
    return BlueskyClient(url, "me.fake.test", PASSWORD, **options)


@pytest.fixture
def client(fakesky):
    fakesky.configure(indexing_delay_s=0)
    fakesky.account("me.fake.test", PASSWORD)
    with new(fakesky.url) as bluesky:
        yield bluesky


def followers(fakesky, name, count, indexes):
    return [fakesky.did(f"f{i}.{name}-{count}.fake.test") for i in indexes]


def test_resolve_returns_the_follower_count(client, fakesky):
    profile = client.resolve("@Crowd-250000.fake.test")
    assert profile.did == fakesky.did("crowd-250000.fake.test")
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


def test_the_session_moves_to_the_pds_its_did_document_names(fakesky):
    fakesky.account("me.fake.test", PASSWORD)
    entryway = fakesky.url.replace("127.0.0.1", "localhost")
    seen = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request):
            seen.append((request.url.host, request.url.path.rsplit("/", 1)[1]))
            return super().handle_request(request)

    with new(entryway, transport=Recording()) as bluesky:
        session = bluesky.login()
        bluesky.resolve("crowd-5.fake.test")
    assert session.pds_url == fakesky.url
    assert seen == [
        ("localhost", "com.atproto.server.createSession"),
        ("127.0.0.1", "app.bsky.actor.getProfile"),
    ]


def test_a_pds_on_loopback_is_refused_unless_allowed(fakesky):
    fakesky.account("me.fake.test", PASSWORD)
    with new(fakesky.url, allow_loopback_pds=False) as bluesky, pytest.raises(UnsafePds):
        bluesky.login()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://93.184.216.34", True),
        ("http://93.184.216.34", False),
        ("https://10.0.0.5", False),
        ("https://192.168.1.1:443", False),
        ("https://169.254.169.254/latest", False),
        ("https://[::1]:8787", False),
        ("https://127.0.0.1:8787", False),
        ("https://user:pw@93.184.216.34", False),
        ("ftp://93.184.216.34", False),
    ],
)
def test_only_public_https_pds_addresses_get_tokens(url, allowed):
    if allowed:
        assert check_pds_url(url) == url
    else:
        with pytest.raises(UnsafePds):
            check_pds_url(url)


def test_loopback_is_allowed_only_when_asked():
    assert check_pds_url("http://127.0.0.1:8787/", allow_loopback=True) == "http://127.0.0.1:8787"
    assert check_pds_url("http://localhost:8787", allow_loopback=True)
    with pytest.raises(UnsafePds):
        check_pds_url("http://10.0.0.5:8787", allow_loopback=True)


def test_a_test_network_s_addresses_are_allowed_only_inside_its_cidrs():
    test_network = (ipaddress.ip_network("172.30.0.0/24"),)
    for url in ("http://172.30.0.10:8787/", "https://172.30.0.10"):
        assert check_pds_url(url, allow_networks=test_network) == url.rstrip("/")
    for url in ("http://172.30.1.10:8787", "http://10.0.0.5", "http://169.254.169.254"):
        with pytest.raises(UnsafePds):
            check_pds_url(url, allow_networks=test_network)
    # Loopback stays as it was: only with allow_loopback.
    with pytest.raises(UnsafePds):
        check_pds_url("http://127.0.0.1:8787", allow_networks=test_network)
    assert check_pds_url("http://127.0.0.1:8787", allow_loopback=True, allow_networks=test_network)
    with BlueskyClient(
        "http://172.30.0.10:8787", "", "", allow_pds_networks=test_network
    ) as client:
        assert client.pds_url == "http://172.30.0.10:8787"


def test_block_many_splits_into_calls_of_at_most_200_writes(client, fakesky):
    dids = followers(fakesky, "crowd", 1000, range(450))
    created = client.block_many(dids)
    assert sorted(created) == sorted(dids)
    state = fakesky.state("me.fake.test")
    assert state["block_count"] == 450
    assert state["write_calls"] == 3


def test_a_batch_written_before_its_answer_was_lost_is_read_back_in_two_calls(client, fakesky):
    """The same keys again after a lost answer: the PDS refuses the whole call, the client
    reads the batch's key range back (listRecords, not one getRecord per key) and writes only
    what is missing."""
    dids = followers(fakesky, "crowd", 1000, range(200))
    rkeys = next_tids(200)
    client.block_many(dids[:150], rkeys[:150])
    before = fakesky.state("me.fake.test")["calls_by_method"]
    assert client.block_many(dids, rkeys) == dict(zip(dids, rkeys, strict=True))
    state = fakesky.state("me.fake.test")
    assert state["block_count"] == state["distinct_blocked"] == 200
    calls = state["calls_by_method"]
    listed = calls["com.atproto.repo.listRecords"] - before.get("com.atproto.repo.listRecords", 0)
    assert listed == 2
    assert "com.atproto.repo.getRecord" not in calls


def test_a_key_that_holds_a_block_of_someone_else_is_taken(client, fakesky):
    first, second, third = followers(fakesky, "crowd", 10, range(3))
    rkeys = next_tids(2)
    client.block_many([first], rkeys[:1])
    with pytest.raises(RkeyTaken):
        client.block_many([second, third], rkeys)
    assert fakesky.state("me.fake.test")["block_count"] == 1


def test_unblock_deletes_the_records(client, fakesky):
    created = client.block_many(followers(fakesky, "crowd", 10, (1, 2)))
    client.unblock_many(list(created.values()))
    assert fakesky.state("me.fake.test")["block_count"] == 0


def test_unblock_tolerates_records_deleted_by_hand(client, fakesky):
    created = client.block_many(followers(fakesky, "crowd", 10, range(5)))
    rkeys = list(created.values())
    # The person unblocked two of them in the Bluesky app meanwhile.
    with new(fakesky.url) as app:
        app.unblock_many(rkeys[1:2])
        app.unblock_many(rkeys[3:4])
    client.unblock_many(rkeys)
    state = fakesky.state("me.fake.test")
    assert state["block_count"] == 0
    assert state["writes_refused"] == 1  # the applyWrites that found a record missing
    # The three still there went in one more call: the two deleteRecord calls are the
    # Bluesky app's, by hand.
    assert state["calls_by_method"].get("com.atproto.repo.deleteRecord", 0) == 2


def test_unblocking_again_after_a_lost_answer_costs_two_calls_not_two_hundred(client, fakesky):
    rkeys = list(client.block_many(followers(fakesky, "crowd", 1000, range(200))).values())
    client.unblock_many(rkeys)  # its answer lost: the person's task runs again
    before = fakesky.state("me.fake.test")["calls"]
    client.unblock_many(rkeys)
    state = fakesky.state("me.fake.test")
    assert state["block_count"] == 0
    assert state["calls"] - before == 2  # the refused applyWrites, one listRecords


def test_running_out_of_the_accounts_write_budget_is_an_account_limit(client, fakesky):
    fakesky.configure(write_points_per_hour=30, hour_window_s=60)
    client.block_many(followers(fakesky, "crowd", 100, range(10)))  # 30 points: all of it
    with pytest.raises(RateLimited) as raised:
        client.block_many(followers(fakesky, "crowd", 100, (50,)))
    assert raised.value.scope == "account"
    assert raised.value.reset_at > time.time()
    assert client.rate_limit.remaining == 0
    assert client.rate_limit.policy == "30;w=60"


def test_running_out_of_the_per_address_budget_is_not_the_accounts(client, fakesky):
    fakesky.configure(ip_requests_per_window=3, ip_window_s=30)
    subject = followers(fakesky, "crowd", 5, (1,))  # resolving a handle: 1 of 3
    # Signing in, and a read, which shows the client the per-address policy: 3 of 3.
    client.resolve("crowd-5.fake.test")
    with pytest.raises(RateLimited) as read:
        client.resolve("crowd-5.fake.test")
    assert read.value.scope == "address"
    with pytest.raises(RateLimited) as write:
        client.block_many(subject)
    assert write.value.scope == "address"
    assert write.value.reset_at > time.time()


def test_an_expired_session_is_refreshed(client, fakesky):
    fakesky.configure(access_token_ttl_s=1)
    client.login()
    old_token = client.session.access_jwt
    time.sleep(2.05)
    assert client.resolve("crowd-5.fake.test").followers_count == 5
    assert client.session.access_jwt != old_token
    state = fakesky.state("me.fake.test")
    assert (state["logins"], state["refreshes"]) == (1, 1)


def test_a_revoked_app_password_is_terminal_once_the_access_token_expires(client, fakesky):
    fakesky.configure(access_token_ttl_s=1)
    client.login()
    fakesky.revoke("me.fake.test")
    time.sleep(2.05)
    calls_before = fakesky.state("me.fake.test")["calls"]
    with pytest.raises(CredentialsRevoked):
        client.resolve("crowd-5.fake.test")
    # The refused call, the refused refresh and one refused sign-in: nothing more.
    assert fakesky.state("me.fake.test")["calls"] - calls_before == 3


def test_a_taken_down_account_is_suspended_not_revoked(client, fakesky):
    client.login()
    fakesky.set_status("me.fake.test", "takendown")
    with pytest.raises(AccountSuspended):
        client.block_many(followers(fakesky, "crowd", 5, (1,)))


def test_a_server_error_is_worth_retrying(client, fakesky):
    client.login()
    fakesky.faults(fail_status=503, fail_count=1)
    with pytest.raises(ProviderError):
        client.resolve("crowd-5.fake.test")
    assert client.resolve("crowd-5.fake.test").followers_count == 5


# -- scripted answers the fake never gives --------------------------------------------------
SCRIPTED = "http://127.0.0.1:9"  # never connected to: the transport answers
SESSION = {
    "did": "did:plc:" + "a" * 24,
    "handle": "me.fake.test",
    "accessJwt": "access",
    "refreshJwt": "refresh",
}


def scripted(*answers):
    """A transport that answers in turn with (status, body, headers) and records each path."""
    paths = []
    queue = list(answers)

    def handle(request):
        paths.append(request.url.path.rsplit("/", 1)[1])
        status, body, headers = queue.pop(0)
        content = json.dumps(body).encode() if body is not None else b""
        return httpx.Response(status, content=content, headers=headers)

    return httpx.MockTransport(handle), paths


def test_a_401_refreshes_then_signs_in_once_before_the_credentials_count_as_revoked():
    refused = (401, {"error": "AuthenticationRequired", "message": "Authentication Required"}, {})
    transport, paths = scripted(
        (200, SESSION, {}),  # sign in
        refused,
        (200, SESSION, {}),  # refresh
        refused,
        (200, SESSION, {}),  # sign in again
        refused,
    )
    with new(SCRIPTED, transport=transport) as bluesky, pytest.raises(CredentialsRevoked):
        bluesky.resolve("crowd-5.fake.test")
    assert paths == [
        "com.atproto.server.createSession",
        "app.bsky.actor.getProfile",
        "com.atproto.server.refreshSession",
        "app.bsky.actor.getProfile",
        "com.atproto.server.createSession",
        "app.bsky.actor.getProfile",
    ]


def test_a_429_without_headers_never_reuses_an_older_reset_time():
    limited = {"ratelimit-limit": "10", "ratelimit-remaining": "9", "ratelimit-reset": "4102444800"}
    transport, _ = scripted(
        (200, SESSION, {}),
        (200, {"did": SESSION["did"], "handle": "x.test"}, limited),
        (429, {"error": "RateLimitExceeded", "message": "slow down"}, {}),
    )
    with new(SCRIPTED, transport=transport) as bluesky:
        bluesky.resolve("x.test")
        assert bluesky.rate_limit.reset_at == 4102444800
        with pytest.raises(RateLimited) as raised:
            bluesky.resolve("x.test")
    assert raised.value.reset_at is None
    assert raised.value.scope == "address"
    assert bluesky.rate_limit.remaining is None
