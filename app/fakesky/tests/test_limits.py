"""Rate limits as the reference PDS sets and counts them (pds/src/rate-limits.ts,
xrpc-server/src/rate-limiter.ts and rate-limiter-http.ts, createSession.ts)."""

import time

from fakesky.tests.conftest import PASSWORD, Xrpc, create, delete, rkey_of

HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


def test_every_xrpc_answer_carries_the_rate_limit_headers(fakesky, alice):
    answers = [
        alice.get("app.bsky.actor.getProfile", actor="crowd-5.fake.test"),
        alice.apply(create(fakesky.did("crowd-5.fake.test"))),
        alice.login("alice.fake.test"),
        alice.get("app.bsky.actor.getProfile", actor="nobody.example.org"),  # a 400
    ]
    for response in answers:
        assert all(name in response.headers for name in HEADERS), response.headers
        assert int(response.headers["ratelimit-reset"]) > time.time() - 1
    # A read spends the per-address budget: 3,000 per 5 minutes.
    assert answers[0].headers["ratelimit-policy"] == "3000;w=300"
    # A write answers with the tightest of its limits: here still the per-address one.
    assert answers[1].headers["ratelimit-policy"] == "3000;w=300"
    assert answers[2].headers["ratelimit-policy"] == "30;w=300"


def test_the_per_address_budget_covers_all_accounts_and_all_calls(fakesky):
    fakesky.configure(ip_requests_per_window=5, ip_window_s=60, indexing_delay_s=0)
    target = fakesky.did("crowd-5.fake.test")  # 1: resolveHandle is a call like any other
    alice, bob = Xrpc(fakesky.url), Xrpc(fakesky.url)
    for handle, xrpc in (("alice.fake.test", alice), ("bob.fake.test", bob)):
        fakesky.account(handle, PASSWORD)
        assert xrpc.login(handle).status_code == 200  # 2, 3
    assert alice.get("app.bsky.actor.getProfile", actor=target).status_code == 200  # 4
    assert alice.apply(create(target)).status_code == 200  # 5
    refused = bob.get("app.bsky.graph.getFollowers", actor=target)
    assert refused.status_code == 429
    assert refused.json() == {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
    assert refused.headers["ratelimit-policy"] == "5;w=60"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert fakesky.state()["totals"]["ip_rate_limited"] == 1
    assert fakesky.state("bob.fake.test")["rate_limited"] == 1
    # Counted by the address they came from (a multi-host test tells its worker hosts apart).
    assert fakesky.state()["totals"]["addresses"] == {
        "127.0.0.1": {"requests": 6, "writes": 1, "ip_rate_limited": 1}
    }


def test_writes_spend_points_per_account_create_3_delete_1(fakesky, alice):
    fakesky.configure(write_points_per_hour=10)
    target = fakesky.did("crowd-10.fake.test")
    made = alice.apply(*(create(target) for _ in range(3)))  # 9 points
    assert made.status_code == 200
    assert made.headers["ratelimit-policy"] == "10;w=3600"
    assert made.headers["ratelimit-remaining"] == "1"
    first = rkey_of(made.json()["results"][0]["uri"])
    assert alice.apply(delete(first)).status_code == 200  # 10 points
    refused = alice.apply(create(target))
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == "10;w=3600"
    # The refused write spent its points too, as rate-limiter-flexible counts them.
    state = fakesky.state("alice.fake.test")
    assert (state["block_count"], state["writes_refused"], state["rate_limited"]) == (2, 1, 1)
    # Which limiter refused, and its window as it stood: 10 points spent, then 3 refused.
    assert state["refused_by"] == {"repo-write-hour": 1}
    assert state["last_refusal"]["limiter"] == "repo-write-hour"
    assert (state["last_refusal"]["points"], state["last_refusal"]["spent"]) == (3, 13)
    assert state["last_refusal"]["reset_at"] >= state["last_refusal"]["at"]
    fakesky.account("bob.fake.test", PASSWORD)
    bob = Xrpc(fakesky.url)
    bob.login("bob.fake.test")
    assert bob.apply(create(target)).status_code == 200  # another account's own budget


def test_the_daily_write_budget_and_a_window_that_ends(fakesky, alice):
    fakesky.configure(write_points_per_day=6, day_window_s=2)
    target = fakesky.did("crowd-10.fake.test")
    assert alice.apply(create(target), create(target)).status_code == 200
    refused = alice.apply(create(target))
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == "6;w=2"
    time.sleep(max(0.0, int(refused.headers["ratelimit-reset"]) + 1 - time.time()))
    assert alice.apply(create(target)).status_code == 200


def test_sign_ins_are_limited_per_identifier_and_address(fakesky, xrpc):
    fakesky.configure(sessions_per_window=2, login_min_ms=0)
    fakesky.account("alice.fake.test", PASSWORD)
    fakesky.account("bob.fake.test", PASSWORD)
    assert xrpc.login("alice.fake.test").status_code == 200
    assert xrpc.login("alice.fake.test", "wrong").status_code == 401
    refused = xrpc.login("alice.fake.test")
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == "2;w=300"
    assert xrpc.login("bob.fake.test").status_code == 200


def test_limits_can_be_switched_off_like_the_reference_pds(fakesky, alice):
    fakesky.configure(rate_limits_enabled=False, write_points_per_hour=1)
    response = alice.apply(create(fakesky.did("crowd-10.fake.test")))
    assert response.status_code == 200
    assert "ratelimit-limit" not in response.headers
