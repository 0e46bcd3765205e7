"""The AppView: eventually consistent viewer state, getFollowers as the reference cuts and
filters it (bsky/src/api/app/bsky/graph/getFollowers.ts, api/util.ts fillPage)."""

import time

from conftest import wait_until

from fakesky.tests.conftest import PASSWORD, Xrpc, create, delete, rkey_of


def viewer(xrpc, actor):
    return xrpc.get("app.bsky.actor.getProfile", actor=actor).json()["viewer"]


def test_a_block_shows_in_viewer_state_only_after_the_indexing_delay(fakesky, alice):
    fakesky.configure(indexing_delay_s=1.5)
    target = fakesky.did("crowd-5.fake.test")
    created = alice.block(target).json()
    assert "blocking" not in viewer(alice, target)
    assert (
        wait_until(lambda: viewer(alice, target).get("blocking"), 5, interval=0.1) == created["uri"]
    )
    alice.post(
        "com.atproto.repo.deleteRecord",
        {"repo": alice.did, "collection": "app.bsky.graph.block", "rkey": rkey_of(created["uri"])},
    )
    assert viewer(alice, target).get("blocking") == created["uri"]  # the deletion too, later
    wait_until(lambda: "blocking" not in viewer(alice, target), 5, interval=0.1, message="unblock")


def test_the_default_indexing_delay_is_two_seconds(fakesky, xrpc):
    fakesky.account("alice.fake.test", PASSWORD)
    xrpc.login("alice.fake.test")
    target = fakesky.did("crowd-5.fake.test")
    started = time.monotonic()
    xrpc.block(target)
    wait_until(lambda: viewer(xrpc, target).get("blocking"), 6, interval=0.1, message="index")
    assert time.monotonic() - started >= 2


def test_a_mute_shows_after_the_indexing_delay(fakesky, alice):
    fakesky.configure(indexing_delay_s=1)
    target = fakesky.did("crowd-5.fake.test")
    assert alice.post("app.bsky.graph.muteActor", {"actor": target}).status_code == 200
    assert viewer(alice, target)["muted"] is False
    wait_until(lambda: viewer(alice, target)["muted"], 5, interval=0.1, message="mute")
    assert fakesky.state("alice.fake.test")["muted"] == [target]
    refused = alice.post("app.bsky.graph.muteActor", {"actor": alice.did})
    assert refused.json()["message"] == "Actor cannot mute themselves"


def page_of(xrpc, actor, cursor=None, limit=100):
    params = {"actor": actor, "limit": limit}
    if cursor:
        params["cursor"] = cursor
    return xrpc.get("app.bsky.graph.getFollowers", **params).json()


def test_followers_come_in_pages_with_a_keyset_cursor(alice):
    first = page_of(alice, "crowd-250.fake.test")
    assert first["subject"]["handle"] == "crowd-250.fake.test"
    assert len(first["followers"]) == 100
    assert first["followers"][0]["handle"] == "f0.crowd-250.fake.test"
    milliseconds, cid = first["cursor"].split("__")
    assert milliseconds.isdigit()
    assert cid.startswith("bafyrei")
    second = page_of(alice, "crowd-250.fake.test", first["cursor"])
    third = page_of(alice, "crowd-250.fake.test", second["cursor"])
    handles = [f["handle"] for page in (first, second, third) for f in page["followers"]]
    assert len(handles) == len(set(handles)) == 250
    assert "cursor" not in third


def test_limit_above_100_and_a_malformed_cursor_are_400(alice):
    too_many = alice.get("app.bsky.graph.getFollowers", actor="crowd-250.fake.test", limit=101)
    assert too_many.status_code == 400
    assert too_many.json()["message"] == "Error: limit can not be greater than 100"
    bad = alice.get("app.bsky.graph.getFollowers", actor="crowd-250.fake.test", cursor="100")
    assert bad.status_code == 400
    assert bad.json()["message"] == "Malformed cursor"


def blocked_first(fakesky, xrpc, count):
    """Block the first ``count`` followers of crowd-300 (the newest ones)."""
    dids, cursor = [], None
    while len(dids) < count:
        page = page_of(xrpc, "crowd-300.fake.test", cursor)
        dids += [f["did"] for f in page["followers"]]
        cursor = page["cursor"]
    assert xrpc.apply(*(create(did) for did in dids[:count])).status_code == 200
    return dids[:count]


def test_followers_blocked_by_the_viewer_are_dropped_and_the_page_refilled(fakesky, alice):
    blocked = blocked_first(fakesky, alice, 150)
    page = page_of(alice, "crowd-300.fake.test")
    handles = [f["handle"] for f in page["followers"]]
    assert handles[0] == "f150.crowd-300.fake.test"
    assert len(handles) == 100
    assert not set(blocked) & {f["did"] for f in page["followers"]}
    assert page["cursor"]


def test_without_refill_a_page_can_be_empty_while_a_cursor_follows(fakesky, alice):
    blocked_first(fakesky, alice, 150)
    fakesky.configure(fill_page_max_requests=1)
    page = page_of(alice, "crowd-300.fake.test")
    assert page["followers"] == []
    assert page["cursor"]
    short = alice.get(
        "app.bsky.graph.getFollowers", actor="crowd-300.fake.test", limit=100, cursor=page["cursor"]
    ).json()
    assert short["followers"][0]["handle"] == "f150.crowd-300.fake.test"
    assert len(short["followers"]) == 50


def test_followers_who_block_the_viewer_are_dropped(fakesky, alice):
    carol = fakesky.account("carol.fake.test", PASSWORD)["did"]
    fakesky.account("bob.fake.test", PASSWORD, follows=[carol])
    fakesky.account("dave.fake.test", PASSWORD, follows=[carol])
    bob = Xrpc(fakesky.url)
    bob.login("bob.fake.test")
    bob.apply(create(alice.did))
    page = alice.get("app.bsky.graph.getFollowers", actor="carol.fake.test").json()
    assert [f["handle"] for f in page["followers"]] == ["dave.fake.test"]


def test_get_blocks_lists_the_newest_first_with_a_cursor(fakesky, alice):
    dids = [fakesky.did(f"f{i}.crowd-10.fake.test") for i in range(5)]
    alice.apply(*(create(did) for did in dids))
    first = alice.get("app.bsky.graph.getBlocks", limit=3).json()
    rest = alice.get("app.bsky.graph.getBlocks", limit=3, cursor=first["cursor"]).json()
    assert [b["did"] for b in first["blocks"] + rest["blocks"]] == dids[::-1]
    assert "cursor" not in rest
    assert all(b["viewer"]["blocking"] for b in first["blocks"])


def test_profiles_of_unknown_and_taken_down_accounts(fakesky, alice):
    unknown = alice.get("app.bsky.actor.getProfile", actor="nobody.example.org")
    assert (unknown.status_code, unknown.json()["message"]) == (400, "Profile not found")
    fakesky.account("bob.fake.test", PASSWORD)
    fakesky.set_status("bob.fake.test", "takendown")
    gone = alice.get("app.bsky.actor.getProfile", actor="bob.fake.test")
    assert (gone.status_code, gone.json()["error"]) == (400, "AccountTakedown")
    profiles = alice.get(
        "app.bsky.actor.getProfiles", actors=["bob.fake.test", "crowd-3.fake.test"]
    ).json()
    assert [p["handle"] for p in profiles["profiles"]] == ["crowd-3.fake.test"]
    too_many = alice.get(
        "app.bsky.actor.getProfiles", actors=[f"crowd-{i}.fake.test" for i in range(26)]
    )
    assert too_many.status_code == 400


def test_deleting_blocks_one_by_one_shows_in_get_blocks(fakesky, alice):
    dids = [fakesky.did(f"f{i}.crowd-10.fake.test") for i in range(3)]
    results = alice.apply(*(create(did) for did in dids)).json()["results"]
    alice.apply(delete(rkey_of(results[1]["uri"])))
    listed = alice.get("app.bsky.graph.getBlocks").json()["blocks"]
    assert [b["did"] for b in listed] == [dids[2], dids[0]]
